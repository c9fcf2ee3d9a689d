"""Random identifiers and tokens for sandbox objects (each provider shapes its own ids)."""

from __future__ import annotations

import secrets
import string

LETTERS_DIGITS = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits


def random_token(length: int, alphabet: str = LETTERS_DIGITS) -> str:
    """A random string of `length` characters from `alphabet`."""
    return "".join(secrets.choice(alphabet) for _ in range(length))


def new_id(prefix: str, length: int = 24, alphabet: str = LETTERS_DIGITS, sep: str = "_") -> str:
    """`<prefix><sep><random>`, or just the random part when `prefix` is empty."""
    token = random_token(length, alphabet)
    return f"{prefix}{sep}{token}" if prefix else token
