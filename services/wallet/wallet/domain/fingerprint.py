"""Canonical request fingerprints for idempotency keys: one digest per field, so a reused key with
a different request can be refused naming the first field that differs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

Fingerprint = dict[str, str]


def _canonical(value: Any) -> bytes:
    """One byte string per value: sorted keys, no whitespace, no floats (amounts are ints)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def fingerprint(fields: Mapping[str, Any]) -> Fingerprint:
    """Digest of each field of a request (the order of `fields` is the order of comparison)."""
    return {
        name: hashlib.sha256(_canonical(value)).hexdigest()[:32] for name, value in fields.items()
    }


def first_mismatch(stored: Mapping[str, str], current: Fingerprint) -> str | None:
    """The first field whose digest differs between the stored and the current request."""
    for name, digest in current.items():
        if stored.get(name) != digest:
            return name
    for name in stored:
        if name not in current:
            return name
    return None
