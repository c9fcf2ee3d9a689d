"""Opaque page tokens for keyset pagination (AIP-158)."""

from __future__ import annotations

import base64
import json
from typing import Any

from hirepay_platform.errors import ValidationError
from hirepay_platform.untrusted import loads_json

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


def page_size(requested: int) -> int:
    """Clamp a requested page size; 0 means the default."""
    if requested < 0:
        raise ValidationError("page_size must not be negative", fields={"page_size": "negative"})
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(cursor: dict[str, Any]) -> str:
    """Encode a keyset cursor as an opaque token."""
    raw = json.dumps(cursor, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> dict[str, Any] | None:
    """Decode a token from encode_token; empty means the first page; garbage is refused."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        # A client's token is untrusted: a crafted one must not nest deep enough to blow the stack.
        cursor = loads_json(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError("page_token is invalid", fields={"page_token": "invalid"}) from exc
    if not isinstance(cursor, dict):
        raise ValidationError("page_token is invalid", fields={"page_token": "invalid"})
    return cursor
