"""Random identifiers and tokens for sandbox objects (each provider shapes its own ids)."""

from __future__ import annotations

import functools
import os
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


class _RandomBytes:
    """Bytes from the OS's random source, read a block at a time and handed out in order (each
    byte once): a read per token was a system call and four Python calls per id, and the Stripe
    sandbox mints a dozen ids per posting (issue 13)."""

    BLOCK = 4096

    def __init__(self) -> None:
        self._block = b""
        self._at = 0
        # A forked child must not hand out its parent's bytes again.
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._block = b""
        self._at = 0

    def take(self, size: int) -> bytes:
        end = self._at + size
        if end > len(self._block):
            self._block = os.urandom(max(self.BLOCK, size))
            self._at, end = 0, size
        chunk = self._block[self._at : end]
        self._at = end
        return chunk


_RANDOM = _RandomBytes()


def random_token(length: int, alphabet: str = LETTERS_DIGITS) -> str:
    """A random string of `length` characters from `alphabet` (ASCII characters).

    Random bytes mapped to characters in C (`bytes.translate`), the bytes beyond the alphabet's
    last whole multiple dropped so that every character is equally likely: a Python loop per
    character was a few percent of the Stripe sandbox's CPU (issue 13)."""
    table, drop = _byte_map(alphabet)
    chars = _RANDOM.take(length + 8).translate(table, drop)
    while len(chars) < length:
        chars += _RANDOM.take(length + 8).translate(table, drop)
    return chars[:length].decode("ascii")


def new_id(prefix: str, length: int = 24, alphabet: str = LETTERS_DIGITS, sep: str = "_") -> str:
    """`<prefix><sep><random>`, or just the random part when `prefix` is empty."""
    token = random_token(length, alphabet)
    return f"{prefix}{sep}{token}" if prefix else token
