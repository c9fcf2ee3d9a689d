"""Idempotency keys as Stripe keeps them: the first result of a POST is saved per (API key,
Idempotency-Key) for 24 hours and replayed; other parameters are refused; a twin still running
gets 409."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from stripe_sandbox.errors import idempotency_in_flight, idempotency_mismatch, invalid_param

KEY_TTL_SECONDS = 24 * 3600
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class SavedResponse:
    """A response as first answered, replayed byte for byte."""

    status: int
    body: bytes
    request_id: str


@dataclass
class _Entry:
    fingerprint: str
    saved: SavedResponse | None = None  # None while the first request is still running
    created: float = field(default_factory=time.monotonic)


def fingerprint(method: str, path: str, body: str) -> str:
    """What makes two requests "the same": endpoint and parameters, not their order."""
    pairs = sorted(parse_qsl(body, keep_blank_values=True))
    return hashlib.sha256(repr((method.upper(), path, pairs)).encode()).hexdigest()


class IdempotencyCache:
    """Saved results by (API key, Idempotency-Key)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}

    def reset(self) -> None:
        self._entries.clear()

    def snapshot(self) -> list[dict[str, object]]:
        """The finished entries as JSON-ready data, with their age (for a restart)."""
        now = time.monotonic()
        return [
            {
                "api_key": api_key,
                "key": key,
                "fingerprint": entry.fingerprint,
                "status": entry.saved.status,
                "body": entry.saved.body.decode("utf-8", "surrogateescape"),
                "request_id": entry.saved.request_id,
                "age": now - entry.created,
            }
            for (api_key, key), entry in self._entries.items()
            if entry.saved is not None
        ]

    def restore(self, items: list[dict[str, object]]) -> None:
        now = time.monotonic()
        self._entries = {
            (str(item["api_key"]), str(item["key"])): _Entry(
                fingerprint=str(item["fingerprint"]),
                saved=SavedResponse(
                    int(item["status"]),  # type: ignore[call-overload]
                    str(item["body"]).encode("utf-8", "surrogateescape"),
                    str(item["request_id"]),
                ),
                created=now - float(item["age"]),  # type: ignore[arg-type]
            )
            for item in items
        }

    def begin(self, api_key: str, key: str, print_: str) -> SavedResponse | None:
        """The saved response to replay, or None after marking the key as in flight.

        Raises the idempotency errors Stripe answers for a mismatch (400) or a twin (409).
        """
        if len(key) > MAX_KEY_LENGTH:
            raise invalid_param(
                f"Idempotency-Key must be at most {MAX_KEY_LENGTH} characters.",
                param="Idempotency-Key",
            )
        self._prune()
        entry = self._entries.get((api_key, key))
        if entry is None:
            self._entries[(api_key, key)] = _Entry(fingerprint=print_)
            return None
        if entry.fingerprint != print_:
            raise idempotency_mismatch(key)
        if entry.saved is None:
            raise idempotency_in_flight()
        return entry.saved

    def finish(self, api_key: str, key: str, saved: SavedResponse | None) -> None:
        """Save the result, or forget the key when the result is not kept (5xx, validation)."""
        if saved is None:
            self._entries.pop((api_key, key), None)
        else:
            entry = self._entries.get((api_key, key))
            if entry is not None:
                entry.saved = saved

    def _prune(self) -> None:
        horizon = time.monotonic() - KEY_TTL_SECONDS
        for scope, entry in list(self._entries.items()):
            if entry.created < horizon and entry.saved is not None:
                del self._entries[scope]
