"""A unit of work takes the pool's idle connection and gives it back without SQLAlchemy's greenlet
(db._checkout_now, db._checkin_now; issue 13), on real PostgreSQL: the pool's own checkout and
checkin run in the caller's context only when they have nothing to await, and every case where
the pool must wait, open, close or reopen a connection, or run a listener, goes SQLAlchemy's way
as before. A broken connection is never handed out again, a transaction is never left open
(PAY-6, OPS-2: a lost database is UNAVAILABLE and retryable), the pool's counts stay right."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import MetaData, event, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.util.concurrency import await_, greenlet_spawn

from hirepay_platform.db import (
    Database,
    _checkin_now,
    _checkout_now,
    autocommit,
)
from hirepay_platform.errors import Unavailable
from tests.platform.counters import IN_TRANSACTION, PID, counters, start_database
from tests.support.pg_schema import database_with
from tests.support.python_calls import greenlet_switches

metadata = MetaData()
rows, _PUT, _BUMP = counters(metadata, "greenlet_rows")


@pytest.fixture(scope="module")
async def db_url(make_database) -> str:
    return await database_with(make_database, "platform_greenlets", metadata)


async def _database(url: str, pool_size: int = 1, max_overflow: int = 0) -> Database[Any]:
    return await start_database(url, "greenlet_rows", pool_size, max_overflow)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database[Any]]:
    database = await _database(db_url)
    yield database
    await database.stop()


async def _warm(db: Database[Any], key: str) -> None:
    """Every statement run once by SQLAlchemy (their plans made), the row `key` stored."""
    async with db.uow() as uow:
        await uow.session.execute(_PUT, {"id": key, "n": 1})
        await uow.session.execute(_BUMP, {"key": "nobody"})
        await uow.session.execute(PID, {})
        await uow.session.execute(IN_TRANSACTION, {})
        await uow.commit()


async def _n(db: Database[Any], key: str) -> int | None:
    async with db.engine.connect() as conn:  # type: ignore[union-attr]
        return await conn.scalar(select(rows.c.n).where(rows.c.id == key))


async def _pid(db: Database[Any]) -> int:
    async with db.uow() as uow:
        return (await uow.session.execute(PID, {})).scalar_one()  # type: ignore[no-any-return]


def _pool(db: Database[Any]) -> Any:
    return db.engine.sync_engine.pool  # type: ignore[union-attr]


async def _terminate(db: Database[Any], pid: int) -> None:
    """End server process `pid` from a connection of its own (not the pool's)."""
    url = db.engine.url.set(drivername="postgresql")  # type: ignore[union-attr]
    conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        await conn.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


async def test_a_warm_unit_of_work_checks_out_and_in_with_no_greenlet(db):
    """Committed, rolled back, read-only and autocommit units of work: none makes a greenlet;
    each gets the same pooled connection, with no transaction left open from the one before."""
    key = f"w-{uuid.uuid4()}"
    await _warm(db, key)
    pid = await _pid(db)
    with greenlet_switches() as switches:
        async with db.uow() as uow:  # committed
            assert (await uow.session.execute(_BUMP, {"key": key})).scalar_one() == 2
            assert _pool(db).checkedout() == 1  # the pool counts it as any checkout
            await uow.commit()
        async with db.uow() as uow:  # not committed: rolled back before it goes back
            await uow.session.execute(_BUMP, {"key": key})
        async with db.uow() as uow:  # read only
            assert (await uow.session.execute(IN_TRANSACTION, {})).scalar_one() is False
            assert (await uow.session.execute(PID, {})).scalar_one() == pid
        async with db.uow() as uow:
            await autocommit(uow.session)
            await uow.session.execute(_BUMP, {"key": key})
    assert switches == []
    assert _pool(db).checkedout() == 0
    assert await _n(db, key) == 3


async def test_a_checkout_that_must_wait_goes_through_sqlalchemy(db):
    """The one connection is in use: the next unit of work waits in the pool's queue (in
    SQLAlchemy's greenlet), and gets it when the first gives it back."""
    key = f"q-{uuid.uuid4()}"
    await _warm(db, key)
    order: list[str] = []

    async def second() -> None:
        async with db.uow() as uow:  # (the checkout is at its first statement)
            await uow.session.execute(_BUMP, {"key": key})
            order.append("second got it")
            await uow.commit()

    with greenlet_switches() as switches:
        async with db.uow() as first:
            await first.session.execute(_BUMP, {"key": key})
            waiting = asyncio.ensure_future(second())
            await asyncio.sleep(0.1)
            assert not waiting.done() and order == []
            assert switches  # the waiting checkout, in SQLAlchemy's greenlet
            await first.commit()
            order.append("first done")
        await asyncio.wait_for(waiting, 5)
    assert order == ["first done", "second got it"]
    assert await _n(db, key) == 3 and _pool(db).checkedout() == 0


async def test_a_pool_with_no_connection_opens_one_through_sqlalchemy(db):
    key = f"o-{uuid.uuid4()}"
    await _warm(db, key)
    before = await _pid(db)
    await db.engine.dispose()  # no connection left in the (new) pool
    with greenlet_switches() as switches:
        async with db.uow() as uow:
            await uow.session.execute(_BUMP, {"key": key})
            after = (await uow.session.execute(PID, {})).scalar_one()
            await uow.commit()
    assert switches and after != before
    assert await _n(db, key) == 2 and _pool(db).checkedout() == 0


async def test_a_lost_connection_is_thrown_away_and_the_pool_invalidated(db_url: str):
    """A statement on a connection the server lost: UNAVAILABLE, the connection closed and every
    connection the pool held then invalidated (SQLAlchemy's disconnect handling); each of them is
    reopened through SQLAlchemy when next checked out, never handed out as it was."""
    db = await _database(db_url, pool_size=2)
    try:
        key = f"l-{uuid.uuid4()}"
        await _warm(db, key)
        async with db.uow() as a, db.uow() as b:  # two pooled connections
            pid_a = (await a.session.execute(PID, {})).scalar_one()
            pid_b = (await b.session.execute(PID, {})).scalar_one()
        # `a`'s was checked in last: handed out next. Its server process goes away.
        await _terminate(db, pid_a)
        with pytest.raises(Unavailable) as caught:
            async with db.uow() as uow:
                await uow.session.execute(_BUMP, {"key": key})
                await uow.commit()
        assert caught.value.reason == "DATABASE_UNAVAILABLE"
        cause = caught.value.__cause__
        assert isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated
        assert _pool(db).checkedout() == 0
        with greenlet_switches() as switches:
            async with db.uow() as x, db.uow() as y:  # both idle connections, reopened
                pids = {
                    (await x.session.execute(PID, {})).scalar_one(),
                    (await y.session.execute(PID, {})).scalar_one(),
                }
                await x.session.execute(_BUMP, {"key": key})
                await x.commit()
        assert switches  # each reopened in SQLAlchemy's greenlet
        assert pids.isdisjoint({pid_a, pid_b})  # pid_b was alive, but older than the loss
        assert await _n(db, key) == 2 and _pool(db).checkedout() == 0
    finally:
        await db.stop()


async def test_a_soft_invalidated_connection_is_reopened_through_sqlalchemy(db):
    key = f"s-{uuid.uuid4()}"
    await _warm(db, key)
    async with db.engine.connect() as conn:
        old = await conn.scalar(text("SELECT pg_backend_pid()"))
        (await conn.get_raw_connection()).invalidate(soft=True)  # recycle at its next checkout
    with greenlet_switches() as switches:
        new = await _pid(db)
    assert switches and new != old
    assert _pool(db).checkedout() == 0


@pytest.mark.parametrize("listener", ["checkout", "checkin", "reset"])
async def test_a_pool_listener_runs_in_sqlalchemys_greenlet(db, listener):
    """Pool listeners may await (SQLAlchemy runs them where they can): with one, checkout and
    checkin go SQLAlchemy's way."""
    key = f"e-{uuid.uuid4()}"
    await _warm(db, key)
    ran: list[str] = []

    def awaiting(*args: Any) -> None:
        await_(asyncio.sleep(0))
        ran.append(listener)

    event.listen(_pool(db), listener, awaiting)
    try:
        async with db.uow() as uow:
            await uow.session.execute(_BUMP, {"key": key})
            await uow.commit()
    finally:
        event.remove(_pool(db), listener, awaiting)
    assert ran == [listener]
    assert await _n(db, key) == 2 and _pool(db).checkedout() == 0


async def test_a_surplus_connection_is_closed_at_checkin_through_sqlalchemy(db_url: str):
    """An overflow connection given back to a full pool is closed for real (I/O: SQLAlchemy's
    way); the other one goes back to the pool."""
    db = await _database(db_url, pool_size=1, max_overflow=1)
    try:
        key = f"v-{uuid.uuid4()}"
        await _warm(db, key)
        with greenlet_switches() as switches:
            async with db.uow() as a:
                async with db.uow() as b:  # the overflow connection (opened through SQLAlchemy)
                    pid_a = (await a.session.execute(PID, {})).scalar_one()
                    pid_b = (await b.session.execute(PID, {})).scalar_one()
                    assert _pool(db).overflow() == 1
                    await b.session.execute(_BUMP, {"key": key})
                    await b.commit()
                # `b` went back to the queue's one place; `a` finds it full.
                opened = len(switches)
            assert len(switches) > opened  # `a`'s connection closed in SQLAlchemy's greenlet
        assert _pool(db).checkedout() == 0 and _pool(db).overflow() == 0
        async with db.engine.connect() as conn:
            alive = set(
                await conn.scalars(
                    text("SELECT pid FROM pg_stat_activity WHERE pid IN (:a, :b)"),
                    {"a": pid_a, "b": pid_b},
                )
            )
        assert pid_a not in alive
        assert await _n(db, key) == 2
    finally:
        await db.stop()


async def test_a_connection_with_its_transaction_open_is_not_checked_in_here(db):
    """_checkin_now leaves a connection whose transaction is still open to SQLAlchemy's checkin,
    which rolls it back (the pool's reset): nothing of it stays."""
    key = f"t-{uuid.uuid4()}"
    await _warm(db, key)
    pooled = _checkout_now(_pool(db))
    assert pooled is not None
    adapted: Any = pooled.dbapi_connection
    await adapted._start_transaction()
    await adapted._connection.execute("UPDATE greenlet_rows SET n = 100 WHERE id = $1", key)
    assert _checkin_now(pooled) is False
    assert _pool(db).checkedout() == 1  # still out
    await greenlet_spawn(pooled.close)  # SQLAlchemy's checkin: its reset rolls back
    assert _pool(db).checkedout() == 0
    async with db.uow() as uow:
        assert (await uow.session.execute(IN_TRANSACTION, {})).scalar_one() is False
    assert await _n(db, key) == 1
