"""The one notifier: signed HTTP callbacks of outbox events to subsystems (API-5).

Events are written to a service's outbox table in the same transaction as the change they tell
of; a relay leases due rows (FOR UPDATE SKIP LOCKED plus a lease time, so several replicas never
send the same row at once), POSTs each body signed like Stripe signs webhooks
(`X-Hirepay-Signature: t=<unix>,v1=HMAC-SHA256(secret, "<t>." + body)`) with the event id as
`Idempotency-Key`, and marks it delivered or retries it with exponential backoff. Delivery is at
least once; receivers deduplicate by the event id.

An outbox table needs the columns `cursor` (the primary key, increasing), `subsystem`,
`callback_next_at` (NULL once nothing is due), `callback_attempts` and `callback_delivered_at`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

import httpx
from sqlalchemy import Row, Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hirepay_platform import workloop

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hirepay-Signature"
DEFAULT_TOLERANCE_SECONDS = 300


def parse_callback_urls(raw: str) -> dict[str, str]:
    """`subsystem=url,subsystem2=url2` or a JSON object {subsystem: url}."""
    raw = raw.strip()
    if not raw:
        return {}
    if raw.startswith("{"):
        data = json.loads(raw)
        return {str(k): str(v) for k, v in data.items()}
    out = {}
    for part in raw.split(","):
        name, sep, url = part.partition("=")
        if not sep or not name.strip() or not url.strip():
            raise ValueError(f"callback url entry {part!r} is not subsystem=url")
        out[name.strip()] = url.strip()
    return out


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The `X-Hirepay-Signature` value of a body."""
    stamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


def verify(
    body: bytes,
    header: str,
    secrets: Sequence[str],
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: int | None = None,
) -> bool:
    """Whether a receiver may trust a body: a v1 signature by one of `secrets` (several during a
    rotation) with a timestamp within `tolerance` seconds."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts.setdefault(key, []).append(value)
    try:
        stamp = int(parts.get("t", [""])[0])
    except ValueError:
        return False
    current = int(time.time()) if now is None else now
    if abs(current - stamp) > tolerance:
        return False
    signed = f"{stamp}.".encode() + body
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        if any(hmac.compare_digest(expected, got) for got in parts.get("v1", [])):
            return True
    return False


class CallbackSender:
    """POSTs one signed event body to a subsystem's URL; True when it answered 2xx (or when no
    URL is configured for that subsystem: nobody to tell)."""

    def __init__(self, urls: dict[str, str], secret: str, timeout: float) -> None:
        if urls and not secret:
            raise ValueError("a callback secret is required when callback URLs are set")
        self._urls = urls
        self._secret = secret
        self._client = httpx.AsyncClient(timeout=timeout)

    @property
    def subsystems(self) -> frozenset[str]:
        return frozenset(self._urls)

    async def send(self, subsystem: str, event_id: str, body: bytes) -> bool:
        url = self._urls.get(subsystem)
        if url is None:
            return True  # nobody to tell
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": event_id,
            SIGNATURE_HEADER: sign(body, self._secret),
        }
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError:
            return False
        return response.is_success

    async def close(self) -> None:
        await self._client.aclose()


class Deliverable(Protocol):
    """What the relay needs of an outbox event."""

    @property
    def cursor(self) -> int: ...

    @property
    def subsystem(self) -> str: ...

    @property
    def event_id(self) -> str: ...


E = TypeVar("E", bound=Deliverable)
E_co = TypeVar("E_co", bound=Deliverable, covariant=True)


class CallbackQueue(Protocol[E_co]):
    """The due callbacks of an outbox (SqlCallbackQueue implements it on a table)."""

    async def lease_callbacks(
        self, now: datetime, limit: int, lease_seconds: float
    ) -> Sequence[E_co]: ...

    async def callback_done(self, cursor: int, now: datetime) -> None: ...

    async def callback_retry(self, cursor: int, next_at: datetime) -> None: ...

    async def callback_attempts(self, cursor: int) -> int: ...


class SqlCallbackQueue:
    """The callback columns of an outbox table, on a unit of work's session (never commits)."""

    def __init__(self, session: AsyncSession, table: Table) -> None:
        self.s = session
        self.t = table

    async def lease_rows(self, now: datetime, limit: int, lease_seconds: float) -> list[Row[Any]]:
        """Due rows, oldest first, leased for `lease_seconds` (rows another replica is leasing
        right now are skipped, rows it leased before are not due until the lease runs out)."""
        t = self.t
        stmt = (
            select(t)
            .where(t.c.callback_next_at <= now)
            .order_by(t.c.cursor)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = list((await self.s.execute(stmt)).all())
        if rows:
            await self.s.execute(
                update(t)
                .where(t.c.cursor.in_([r._mapping["cursor"] for r in rows]))
                .values(
                    callback_next_at=now + timedelta(seconds=lease_seconds),
                    callback_attempts=t.c.callback_attempts + 1,
                )
            )
        return rows

    async def callback_done(self, cursor: int, now: datetime) -> None:
        await self.s.execute(
            update(self.t)
            .where(self.t.c.cursor == cursor)
            .values(callback_next_at=None, callback_delivered_at=now)
        )

    async def callback_retry(self, cursor: int, next_at: datetime) -> None:
        await self.s.execute(
            update(self.t).where(self.t.c.cursor == cursor).values(callback_next_at=next_at)
        )

    async def callback_attempts(self, cursor: int) -> int:
        n = await self.s.scalar(select(self.t.c.callback_attempts).where(self.t.c.cursor == cursor))
        return int(n or 0)

    async def backlog(self) -> int:
        """Callbacks not delivered yet."""
        n = await self.s.scalar(
            select(func.count()).select_from(self.t).where(self.t.c.callback_next_at.is_not(None))
        )
        return int(n or 0)


class UnitOfWork(Protocol):
    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc_info: object) -> Any: ...

    async def commit(self) -> None: ...


async def deliver_due(
    uow: AbstractAsyncContextManager[Any] | UnitOfWork,
    queue_of: Callable[[Any], CallbackQueue[E]],
    sender: CallbackSender,
    encode: Callable[[E], bytes],
    clock: Callable[[], datetime],
    *,
    batch: int = 50,
    lease_seconds: float = 30.0,
    base_delay: float = 0.5,
    max_delay: float = 300.0,
) -> int:
    """One relay round: lease due events, send each, record its outcome; the number delivered.

    `uow` is entered once per local transaction (lease, then one per event) and `queue_of(uow)`
    is the outbox's queue inside it. A failed send is due again after base_delay * 2^attempts
    seconds (at most max_delay); an event whose outcome is never recorded (a crash mid-send) is
    due again when its lease runs out."""
    async with uow as tx:
        events = await queue_of(tx).lease_callbacks(clock(), batch, lease_seconds)
        await tx.commit()
    delivered = 0
    for event in events:
        ok = await sender.send(event.subsystem, event.event_id, encode(event))
        async with uow as tx:
            queue = queue_of(tx)
            now = clock()
            if ok:
                await queue.callback_done(event.cursor, now)
                delivered += 1
            else:
                attempts = await queue.callback_attempts(event.cursor)
                delay = min(max_delay, base_delay * 2 ** min(attempts, 16))
                await queue.callback_retry(event.cursor, now + timedelta(seconds=delay))
            await tx.commit()
    return delivered


async def relay_loop(
    round_: Callable[[], Awaitable[int]], stop: asyncio.Event, *, interval: float
) -> None:
    """Run relay rounds until `stop` is set: at once again after a round that delivered, else
    after `interval`, or longer while the process is idle (workloop.run_worker); a failed round
    is logged and the next one retries."""
    await workloop.run_worker(round_, stop, name="callback relay", interval=interval)
