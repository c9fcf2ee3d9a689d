"""Idempotency keys: the first result of a request is saved per (scope, key) and replayed; a
different request with the same key, or a twin still running, is a conflict the provider answers
in its own words."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl


@dataclass(frozen=True)
class SavedResponse:
    """A response as first answered, replayed byte for byte."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class IdempotencyConflict(Exception):
    """The key was used for another request (`mismatch`) or its first request still runs."""

    def __init__(self, reason: Literal["mismatch", "in_flight"], key: str) -> None:
        super().__init__(f"idempotency key {key!r}: {reason}")
        self.reason = reason
        self.key = key


@dataclass
class _Entry:
    fingerprint: str
    saved: SavedResponse | None = None  # None while the first request is still running
    created: float = field(default_factory=time.monotonic)


# What a JSON text can start with (after JSON's whitespace): a body starting otherwise is not
# JSON, and is not worth json.loads raising its error for (a form body, every Stripe call).
_JSON_STARTS = frozenset('{["-0123456789tfnNI')


def fingerprint(
    method: str, path: str, body: bytes | str, pairs: list[tuple[str, str]] | None = None
) -> str:
    """What makes two requests "the same": endpoint and parameters, not their order or spacing.

    JSON bodies compare as data; form bodies as sorted pairs; anything else byte for byte.
    `pairs`: the body's pairs as `parse_qsl(body, keep_blank_values=True)` gives them, when the
    caller has them already.
    """
    text = body.decode() if isinstance(body, bytes) else body
    canonical: object = None
    if not text.strip():
        canonical = ""
    elif text.lstrip(" \t\n\r")[:1] in _JSON_STARTS:
        with contextlib.suppress(ValueError):
            canonical = json.dumps(json.loads(text), sort_keys=True)
    if canonical is None:
        if "=" in text:
            canonical = sorted(parse_qsl(text, keep_blank_values=True) if pairs is None else pairs)
        else:
            canonical = text
    return hashlib.sha256(repr((method.upper(), path, canonical)).encode()).hexdigest()


class IdempotencyCache:
    """Saved results by (scope, key); scope is what the provider keys them by (API key, client)."""

    # How often expired answers are swept out of memory (a key past its TTL is never replayed
    # in between: `begin` checks the key it looks up).
    PRUNE_EVERY = 1.0

    def __init__(self, ttl_seconds: float = 24 * 3600) -> None:
        self.ttl_seconds = ttl_seconds
        # Oldest first: a key enters when first used and is never moved, so the sweep can stop
        # at the first entry still within the TTL.
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._next_prune = 0.0

    def reset(self) -> None:
        self._entries.clear()

    def snapshot(self) -> list[dict[str, Any]]:
        """The finished entries as JSON-ready data, with their age (for a state file)."""
        now = time.monotonic()
        return [
            {
                "scope": scope,
                "key": key,
                "fingerprint": entry.fingerprint,
                "status": entry.saved.status,
                "body": entry.saved.body.decode("utf-8", "surrogateescape"),
                "headers": entry.saved.headers,
                "age": now - entry.created,
            }
            for (scope, key), entry in self._entries.items()
            if entry.saved is not None
        ]

    def restore(self, items: list[dict[str, Any]]) -> None:
        """Replace the entries with a `snapshot()` taken earlier."""
        now = time.monotonic()
        oldest_first = sorted(items, key=lambda item: -float(item["age"]))
        self._entries = {
            (str(item["scope"]), str(item["key"])): _Entry(
                fingerprint=str(item["fingerprint"]),
                saved=SavedResponse(
                    int(item["status"]),
                    str(item["body"]).encode("utf-8", "surrogateescape"),
                    dict(item.get("headers") or {}),
                ),
                created=now - float(item["age"]),
            )
            for item in oldest_first
        }

    def begin(
        self, scope: str, key: str, print_: str, *, strict: bool = True
    ) -> SavedResponse | None:
        """The saved response to replay, or None after marking the key as in flight.

        Raises `IdempotencyConflict`. With `strict=False` a different request under a used key
        replays the first answer instead of conflicting (PayPal keys by request id alone).
        """
        now = time.monotonic()
        if now >= self._next_prune:
            self._prune(now)
        entry = self._entries.get((scope, key))
        if entry is not None and self._expired(entry, now):
            del self._entries[(scope, key)]
            entry = None
        if entry is None:
            self._entries[(scope, key)] = _Entry(fingerprint=print_, created=now)
            return None
        if strict and entry.fingerprint != print_:
            raise IdempotencyConflict("mismatch", key)
        if entry.saved is None:
            raise IdempotencyConflict("in_flight", key)
        return entry.saved

    def finish(self, scope: str, key: str, saved: SavedResponse | None) -> None:
        """Save the result, or forget the key when the result is not kept (5xx, validation)."""
        if saved is None:
            self._entries.pop((scope, key), None)
        else:
            entry = self._entries.get((scope, key))
            if entry is not None:
                entry.saved = saved

    def _expired(self, entry: _Entry, now: float) -> bool:
        """A saved answer past its TTL (a request still running keeps its key)."""
        return entry.saved is not None and entry.created < now - self.ttl_seconds

    def _prune(self, now: float) -> None:
        """Forget the saved answers past their TTL, at most every PRUNE_EVERY seconds and
        reading only the expired entries at the front: a sweep of every key on every request
        grew with the keys kept (a day's worth) and, a few thousand postings in, was most of
        the sandbox's CPU (issue 13)."""
        self._next_prune = now + self.PRUNE_EVERY
        horizon = now - self.ttl_seconds
        expired = []
        for scoped_key, entry in self._entries.items():
            if entry.created >= horizon:
                break
            if entry.saved is not None:
                expired.append(scoped_key)
        for scoped_key in expired:
            del self._entries[scoped_key]
