"""Idempotency-Key handling at the edge: the header's rules and the request body's fingerprint.

The key itself is stored and enforced by the service that owns the operation (jobs scopes it to the
caller and records the response); the gateway checks the header, forwards it as `request_id`, and
sends the body's fingerprint (`hirepay_platform.fingerprint.digest`, sha256 of its canonical JSON)
so that the same key with another body is refused (PAY-8).
"""

from __future__ import annotations

import hashlib
import re

from gateway.api.errors import ApiError, validation_failed

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
_PRINTABLE = re.compile(r"[\x20-\x7e]+")


def require_key(value: str | None) -> str:
    """The Idempotency-Key header, which must be present and 1-255 printable ASCII characters."""
    if value is None or value == "":
        raise ApiError(
            400,
            "IDEMPOTENCY_KEY_REQUIRED",
            f"The {HEADER} header is required for this request (a unique value per operation)",
        )
    return _checked(value)


def optional_key(value: str | None) -> str | None:
    """An optional Idempotency-Key header, checked when present."""
    return None if value is None or value == "" else _checked(value)


def _checked(value: str) -> str:
    if len(value) > MAX_KEY_LENGTH or not _PRINTABLE.fullmatch(value) or not value.strip():
        raise validation_failed({HEADER: f"must be 1-{MAX_KEY_LENGTH} printable ASCII characters"})
    return value


def scoped_request_id(user_id: str, operation: str, key: str) -> str:
    """A request_id for services that do not scope keys by caller themselves: bound to the user."""
    digest = hashlib.sha256(f"{user_id}\x00{operation}\x00{key}".encode()).hexdigest()
    return f"{operation}_{digest[:40]}"
