"""Stripe-style identifiers (`pi_...`, `cs_test_...`, `whsec_...`) and other random tokens."""

from __future__ import annotations

import string

from sandbox_kit import ids as kit_ids

_ALPHABET = string.ascii_letters + string.digits

# How long the random part of each kind of id is, as Stripe's ids look.
_LENGTHS: dict[str, int] = {"cs_test": 58, "whsec": 32, "req": 14, "evt": 24}


def random_token(length: int) -> str:
    """A random string of letters and digits."""
    return kit_ids.random_token(length, _ALPHABET)


def new_id(prefix: str) -> str:
    """A fresh id such as `pi_3Q0abc...` for the object kind `prefix`."""
    return f"{prefix}_{random_token(_LENGTHS.get(prefix, 24))}"


def client_secret(object_id: str) -> str:
    """A client secret for a PaymentIntent, shaped like Stripe's `pi_..._secret_...`."""
    return f"{object_id}_secret_{random_token(25)}"
