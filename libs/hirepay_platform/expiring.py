"""A small bounded cache whose entries expire at a given time (standard library only).

Used where a result is costly to compute and stays true until a known moment: a signed token
reused for part of its life, a verified token remembered until it expires (identity.py and the
gateway's user tokens). Expiry is judged on the caller's clock, passed to every call, so a test
can move time and code never reads a clock of its own here.
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

DEFAULT_MAX_ENTRIES = 10_000


class ExpiringCache(Generic[K, V]):
    """`key -> value` until `expires` (seconds, the caller's clock). Never unbounded: when full,
    the expired entries go first, then all of them (the callers' entries are cheap to remake)."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: dict[K, tuple[V, float]] = {}

    def get(self, key: K, now: float) -> V | None:
        """The value while `now` is before its expiry; None (and the entry dropped) after."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now < entry[1]:
            return entry[0]
        del self._entries[key]
        return None

    def entry(self, key: K, now: float) -> tuple[V, float] | None:
        """The value and its expiry while `now` is before it; None (and the entry dropped)
        after: for a caller that keeps something derived from the value no longer than it."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now < entry[1]:
            return entry
        del self._entries[key]
        return None

    def put(self, key: K, value: V, expires: float, now: float) -> None:
        if len(self._entries) >= self.max_entries and key not in self._entries:
            for stale in [k for k, (_, at) in self._entries.items() if at <= now]:
                del self._entries[stale]
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
        self._entries[key] = (value, expires)

    def __len__(self) -> int:
        return len(self._entries)
