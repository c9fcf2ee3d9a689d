"""The one request fingerprint: a digest per field, so a reused key with another request is refused
naming the first field that differs (PAY-8), and a digest of a whole body for the edge."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from typing import Any

# Field name -> digest of its canonical value. Stored as JSON (JSONB column or text).
Fingerprint = dict[str, str]


# The canonical form's one encoder: `json.dumps` with these options makes a new JSONEncoder on
# every call, and a field's digest went through three functions of this module to reach it - 7
# Python calls per digest of a structured field (a Transfer's legs), 3 with the encoder kept and
# the steps in line (issue 13). The encoder keeps no state between calls.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> bytes:
    """One byte form per JSON value: sorted keys, no insignificant whitespace, UTF-8.

    Amounts are integers, never floats, so the form is stable across processes and languages."""
    return _CANONICAL.encode(value).encode()


def digest(value: Any) -> str:
    """sha256 (hex) of the canonical JSON of a value, e.g. a whole parsed request body."""
    return hashlib.sha256(_CANONICAL.encode(value).encode()).hexdigest()


def _field_digest(value: Any) -> str:
    """The first half of `digest` (its steps in line)."""
    return hashlib.sha256(_CANONICAL.encode(value).encode()).hexdigest()[:32]


# A request's scalar fields repeat (an operation name, an empty description, an account id, a zero
# amount): each is digested once per process, not on every call - a digest is ~10 Python calls, a
# wallet Transfer made 4 and a Reserve + Confirm 8 (issue 13). `typed`: True and 1 are equal
# keys, and their JSON differs.
_scalar_digest = functools.lru_cache(maxsize=4096, typed=True)(_field_digest)
_SCALARS = (str, int, bool, type(None))  # not float: -0.0 == 0.0, and their JSON differs
# Empty containers (no shares, no metadata), by type: [] and () have one JSON form, {} another.
_EMPTY = {list: _field_digest([]), tuple: _field_digest(()), dict: _field_digest({})}


def fingerprint(fields: Mapping[str, Any]) -> Fingerprint:
    """Digest of each field of a request (the order of `fields` is the order of comparison)."""
    digests: Fingerprint = {}
    for name, value in fields.items():
        kind = type(value)
        if kind in _SCALARS:
            digests[name] = _scalar_digest(value)
        elif kind in _EMPTY and not value:
            digests[name] = _EMPTY[kind]
        else:
            digests[name] = _field_digest(value)
    return digests


def first_mismatch(stored: Mapping[str, str], current: Mapping[str, str]) -> str | None:
    """The first field whose digest differs between the stored and the current request."""
    for name, value in current.items():
        if stored.get(name) != value:
            return name
    for name in stored:
        if name not in current:
            return name
    return None


def encode(print_: Mapping[str, str]) -> str:
    """A fingerprint as text, for a text column or a metadata value."""
    return json.dumps(dict(print_), sort_keys=True, separators=(",", ":"))


def decode(text: str) -> Fingerprint:
    """The fingerprint `encode` wrote; an empty or unreadable value is the empty fingerprint (so it
    differs from any real request's)."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}
