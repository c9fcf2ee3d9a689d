"""The one notifier (hirepay_platform.notifier): signatures a receiver can check, and the relay
over a real PostgreSQL outbox table delivering every event, retrying refusals with backoff, and
never sending one row from two replicas at once."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy import BigInteger, Column, DateTime, Identity, Integer, MetaData, String, Table

from hirepay_platform.db import Database, SqlAlchemyUnitOfWork, create_engine
from hirepay_platform.notifier import (
    CallbackSender,
    SqlCallbackQueue,
    deliver_due,
    parse_callback_urls,
    sign,
    verify,
)
from tests.support.callback_receiver import CallbackReceiver

SECRET = "notifier-secret-for-tests"

metadata = MetaData()
events = Table(
    "notifier_events",
    metadata,
    Column("cursor", BigInteger, Identity(), primary_key=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("subsystem", String(64), nullable=False),
    Column("callback_next_at", DateTime(timezone=True)),
    Column("callback_attempts", Integer, nullable=False, server_default="0"),
    Column("callback_delivered_at", DateTime(timezone=True)),
)


@dataclass(frozen=True)
class Event:
    cursor: int
    subsystem: str
    event_id: str


class Queue(SqlCallbackQueue):
    async def lease_callbacks(self, now: datetime, limit: int, lease_seconds: float) -> list[Event]:
        rows = await self.lease_rows(now, limit, lease_seconds)
        return [Event(r.cursor, r.subsystem, r.event_id) for r in rows]


class Uow(SqlAlchemyUnitOfWork):
    queue: Queue

    def _attach(self, session) -> None:
        self.queue = Queue(session, events)


def test_signature_verifies_within_tolerance_and_across_rotation() -> None:
    body = b'{"id": "evt_1"}'
    header = sign(body, SECRET, 1_000_000)
    assert verify(body, header, [SECRET], now=1_000_100)
    assert verify(body, header, ["old-secret", SECRET], now=1_000_100)  # during a rotation
    assert not verify(body, header, ["someone-else"], now=1_000_100)
    assert not verify(body + b" ", header, [SECRET], now=1_000_100)
    assert not verify(body, header, [SECRET], now=1_000_301)  # too old
    assert not verify(body, "v1=deadbeef", [SECRET], now=1_000_000)
    assert parse_callback_urls("a=http://x/1, b=http://y/2") == {
        "a": "http://x/1",
        "b": "http://y/2",
    }
    with pytest.raises(ValueError):
        parse_callback_urls("no-equals-sign")
    with pytest.raises(ValueError):
        CallbackSender({"a": "http://x"}, "", 1.0)  # URLs without a secret


@pytest.fixture(scope="module")
async def database(make_database):
    url = make_database("notifier")
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    await engine.dispose()
    db = Database(url, Uow, probe_table="notifier_events")
    await db.start()
    yield db
    await db.stop()


async def _add(db: Database[Uow], n: int, subsystem: str, prefix: str) -> None:
    now = datetime.now(UTC)
    async with db.uow() as uow:
        await uow.session.execute(
            events.insert(),
            [
                {"event_id": f"{prefix}-{i}", "subsystem": subsystem, "callback_next_at": now}
                for i in range(n)
            ],
        )
        await uow.commit()


async def test_two_replicas_deliver_each_event_once_and_refusals_are_retried(database) -> None:
    receiver = CallbackReceiver(SECRET, fail_first=3)
    sender = CallbackSender({"market": receiver.url}, SECRET, 5.0)
    await _add(database, 40, "market", "evt-a")

    def encode(event: Event) -> bytes:
        return json.dumps({"id": event.event_id}).encode()

    async def replica() -> None:
        for _ in range(200):
            if len(receiver.bodies()) >= 40:
                return
            await deliver_due(
                database.uow(), lambda uow: uow.queue, sender, encode, lambda: datetime.now(UTC),
                batch=7, base_delay=0.01, max_delay=0.05,
            )  # fmt: skip
            await asyncio.sleep(0.01)

    try:
        await asyncio.gather(replica(), replica())
    finally:
        await sender.close()
        receiver.close()
    ids = [body["id"] for body in receiver.bodies()]
    assert sorted(ids) == sorted(f"evt-a-{i}" for i in range(40))  # each once, none lost
    assert all(ok for _, ok in receiver.received)
    assert receiver.idempotency_keys == ids
    async with database.uow() as uow:
        assert await uow.queue.backlog() == 0


async def test_nobody_to_tell_is_done_at_once(database) -> None:
    await _add(database, 2, "nobody", "evt-b")
    sender = CallbackSender({}, "", 1.0)
    try:
        sent = await deliver_due(
            database.uow(), lambda uow: uow.queue, sender, lambda e: b"{}",
            lambda: datetime.now(UTC),
        )  # fmt: skip
    finally:
        await sender.close()
    assert sent == 2
