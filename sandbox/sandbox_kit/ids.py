"""Random identifiers and tokens for sandbox objects (each provider shapes its own ids)."""

from __future__ import annotations

import functools
import secrets
import string

LETTERS_DIGITS = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits


@functools.lru_cache(maxsize=16)
def _byte_map(alphabet: str) -> tuple[bytes, bytes]:
    """(table, drop) for bytes.translate: a random byte below the largest multiple of the
    alphabet's size becomes the character it picks, the others are dropped, so every character
    is equally likely."""
    base = len(alphabet)
    usable = 256 - 256 % base
    table = bytes(ord(alphabet[b % base]) if b < usable else 0 for b in range(256))
    return table, bytes(range(usable, 256))


def random_token(length: int, alphabet: str = LETTERS_DIGITS) -> str:
    """A random string of `length` characters from `alphabet` (ASCII characters).

    Bytes from the OS's random source mapped to characters in C (`bytes.translate`), one read
    per token: a Python loop per character was a few percent of the Stripe sandbox's CPU, which
    mints a dozen ids per posting (issue 13)."""
    table, drop = _byte_map(alphabet)
    chars = b""
    while len(chars) < length:
        chars += secrets.token_bytes(length + 8).translate(table, drop)
    return chars[:length].decode("ascii")


def new_id(prefix: str, length: int = 24, alphabet: str = LETTERS_DIGITS, sep: str = "_") -> str:
    """`<prefix><sep><random>`, or just the random part when `prefix` is empty."""
    token = random_token(length, alphabet)
    return f"{prefix}{sep}{token}" if prefix else token
