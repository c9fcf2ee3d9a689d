"""Random identifiers and tokens for sandbox objects (each provider shapes its own ids)."""

from __future__ import annotations

import secrets
import string

LETTERS_DIGITS = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits


def random_token(length: int, alphabet: str = LETTERS_DIGITS) -> str:
    """A random string of `length` characters from `alphabet`.

    The digits, in base len(alphabet), of one number drawn from the OS's random source with 64
    bits to spare (a bias below 2**-64): one read of it per token, where a choice per
    character read it once per character."""
    base = len(alphabet)
    number = int.from_bytes(secrets.token_bytes((length * base.bit_length() + 7) // 8 + 8), "big")
    chars = []
    for _ in range(length):
        number, digit = divmod(number, base)
        chars.append(alphabet[digit])
    return "".join(chars)


def new_id(prefix: str, length: int = 24, alphabet: str = LETTERS_DIGITS, sep: str = "_") -> str:
    """`<prefix><sep><random>`, or just the random part when `prefix` is empty."""
    token = random_token(length, alphabet)
    return f"{prefix}{sep}{token}" if prefix else token
