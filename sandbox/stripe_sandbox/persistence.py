"""The sandbox's state on disk: objects, events and saved idempotent responses survive a restart.

A real provider does not forget a payment because a process died. With a state file configured
(`--state-file` / SANDBOX_STATE_FILE; `make run` uses .data/sandbox-state.json) the store is
written atomically (temporary file, then rename) shortly after every change, at most every
`interval` seconds, and once more at shutdown; a new process loads it at start-up. Webhook
deliveries in flight are not kept: like a provider, the sandbox re-sends nothing it had not yet
sent, and the event objects remain listable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from sandbox_kit.idempotency import IdempotencyCache
from stripe_sandbox import cards
from stripe_sandbox.store import Store

log = logging.getLogger("stripe_sandbox.persistence")

FORMAT_VERSION = 1
# Sandbox-only values kept beside objects (a payment method's test outcome): tagged in the file.
_TAG = "__sandbox_value__"
_TYPES: dict[str, type] = {t.__name__: t for t in (cards.TestMethod, cards.Decline, cards.Outcome)}


def _encode(value: object) -> object:
    if isinstance(value, enum.Enum) and type(value).__name__ in _TYPES:
        return {_TAG: type(value).__name__, "value": value.value}
    if dataclasses.is_dataclass(value) and type(value).__name__ in _TYPES:
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {_TAG: type(value).__name__, "fields": fields}
    raise TypeError(f"cannot save a {type(value).__name__} in the sandbox state")


def _decode(item: dict[str, Any]) -> object:
    kind = item.get(_TAG)
    if kind is None:
        return item
    cls = _TYPES[kind]
    if issubclass(cls, enum.Enum):
        return cls(item["value"])
    return cls(**item["fields"])


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, default=_encode)


def loads(text: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(text, object_hook=_decode)
    return data


class ChangeCountingLock(asyncio.Lock):
    """The store lock; counts releases, so the saver knows the state may have changed."""

    def __init__(self) -> None:
        super().__init__()
        self.releases = 0

    def release(self) -> None:
        self.releases += 1
        super().release()


def snapshot(store: Store, idempotency: IdempotencyCache) -> dict[str, Any]:
    """Everything to keep, as JSON-ready data (call with the store lock held)."""
    return {
        "version": FORMAT_VERSION,
        "saved_at": time.time(),
        "objects": store.objects,
        "owner": store.owner,
        "internal": store.internal,
        "clock_offset": store.clock_offset,
        "idempotency": idempotency.snapshot(),
    }


def restore(data: dict[str, Any], store: Store, idempotency: IdempotencyCache) -> None:
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"unknown sandbox state format {data.get('version')!r}")
    store.objects = data["objects"]
    store.owner = data["owner"]
    store.internal = data["internal"]
    store.clock_offset = float(data["clock_offset"])
    idempotency.restore([_saved_entry(item) for item in data["idempotency"]])


def _saved_entry(item: dict[str, Any]) -> dict[str, Any]:
    """A saved idempotency entry in the kit's shape; files written before the kit kept the
    API key and request id as fields of their own."""
    if "api_key" not in item:
        return item
    rest = {k: v for k, v in item.items() if k not in ("api_key", "request_id")}
    return {**rest, "scope": item["api_key"], "headers": {"Request-Id": item["request_id"]}}


class StateFile:
    """Loads the state at start-up and keeps writing it while the sandbox runs."""

    def __init__(self, path: Path, interval: float = 0.1) -> None:
        self.path = path
        self.interval = interval
        self._saved_releases = -1

    def load(self, store: Store, idempotency: IdempotencyCache) -> bool:
        """Restore the saved state, if there is one; True when something was loaded."""
        try:
            data = loads(self.path.read_text())
        except FileNotFoundError:
            return False
        restore(data, store, idempotency)
        count = sum(len(objects) for objects in store.objects.values())
        log.info("restored %d objects from %s", count, self.path)
        return True

    def _write(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with temporary.open("w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)  # atomic: a crash leaves the old or the new file

    async def save(self, store: Store, idempotency: IdempotencyCache) -> None:
        """Write the state if it may have changed since the last write."""
        lock = store.lock
        releases = getattr(lock, "releases", None)
        if releases is not None and releases == self._saved_releases:
            return
        async with lock:
            text = dumps(snapshot(store, idempotency))
            self._saved_releases = getattr(lock, "releases", 0) + 1  # counts this release too
        await asyncio.to_thread(self._write, text)

    async def run(self, store: Store, idempotency: IdempotencyCache) -> None:
        """Save after changes until cancelled; then save a last time."""
        try:
            while True:
                await asyncio.sleep(self.interval)
                try:
                    await self.save(store, idempotency)
                except Exception:  # keep trying: a bad write must not end persistence silently
                    log.exception("could not write the sandbox state to %s", self.path)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.save(store, idempotency))
