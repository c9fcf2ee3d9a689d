"""A unit of work of hot statements only, on the pool's connection without SQLAlchemy's Connection
(db.CoreSession, issue 13): what it must keep of SQLAlchemy's way, on real PostgreSQL — the pool's
size and checkout count, a lost server's connection thrown away, dispose(), commit and rollback,
errors raised as SQLAlchemy raises them (a lost database is UNAVAILABLE and retryable: PAY-6,
OPS-2), and SQLAlchemy's way as soon as anything needs it."""

from __future__ import annotations

import asyncio
import pstats
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import MetaData, bindparam, event, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from hirepay_platform.db import (
    CoreSession,
    Database,
    HotResult,
    HotStatement,
    create_engine,
    execute_alone,
    lost_race,
)
from hirepay_platform.errors import Conflict, Unavailable
from hirepay_platform.write_batch import BatchedSession
from tests.platform.counters import PID, CoreUnitOfWork, counters, start_database
from tests.support.pg_proxy import PostgresProxy
from tests.support.pg_round_trips import RoundTrips
from tests.support.pg_schema import database_with
from tests.support.python_calls import profiled

metadata = MetaData()
items, _PUT, _BUMP = counters(metadata, "pooled_items")

_GET = HotStatement(select(items.c.n).where(items.c.id == bindparam("id")))
_LOCK_NOWAIT = HotStatement(
    select(items.c.n).where(items.c.id == bindparam("id")).with_for_update(nowait=True)
)

_SLEEP = HotStatement(text("SELECT pg_sleep(CAST(:s AS float)) IS NULL AS slept"))


@pytest.fixture(scope="module")
async def db_url(make_database) -> str:
    return await database_with(make_database, "platform_pooled", metadata)


async def _database(url: str, pool_size: int = 2) -> Database[CoreUnitOfWork]:
    return await start_database(url, "pooled_items", pool_size)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database[CoreUnitOfWork]]:
    database = await _database(db_url)
    yield database
    await database.stop()


async def _warm(db: Database[CoreUnitOfWork], key: str) -> None:
    """Every statement run once by SQLAlchemy (their plans made), the row `key` stored."""
    async with db.uow() as uow:
        await uow.session.execute(_PUT, {"id": key, "n": 1})
        await uow.session.execute(_GET, {"id": key})
        await uow.session.execute(_LOCK_NOWAIT, {"id": key})
        await uow.session.execute(_BUMP, {"key": "nobody"})
        await uow.session.execute(PID, {})
        await uow.commit()


async def _n(db: Database[CoreUnitOfWork], key: str) -> int | None:
    async with db.engine.connect() as conn:  # type: ignore[union-attr]
        return await conn.scalar(select(items.c.n).where(items.c.id == key))


def _pool(db: Database[CoreUnitOfWork]) -> Any:
    return db.engine.sync_engine.pool  # type: ignore[union-attr]


async def test_hot_statements_only_run_on_the_pool_connection_without_a_connection_object(
    db, wrapped
):
    key = f"p-{uuid.uuid4()}"
    await _warm(db, key)
    wrapped.clear()
    async with db.uow() as uow:
        assert (await uow.session.execute(_GET, {"id": key})).scalar_one() == 1
        assert _pool(db).checkedout() == 1  # the pool counts it as any checkout
        assert (await uow.session.execute(_BUMP, {"key": key})).scalar_one() == 2
        await uow.commit()
    assert wrapped == [] and _pool(db).checkedout() == 0
    assert await _n(db, key) == 2  # committed: seen from another connection
    async with db.uow() as uow:
        await uow.session.execute(_BUMP, {"key": key})
        # No commit: rolled back when the unit of work ends.
    assert await _n(db, key) == 2
    async with db.uow() as uow:
        await uow.session.execute(_BUMP, {"key": key})
        await uow.rollback()
        await uow.session.execute(_BUMP, {"key": key})  # a new transaction after the rollback
        await uow.commit()
    assert len(wrapped) == 2  # _n's own connections only
    assert await _n(db, key) == 3 and _pool(db).checkedout() == 0


def test_a_pooled_unit_of_work_costs_no_sqlalchemy_connection_machinery(db_url: str) -> None:
    """The Python a warm unit of work of two hot statements and a commit costs: no SQLAlchemy
    Connection, AsyncConnection or transaction object, and the pool's checkout and checkin once
    (what made it about 60 Python calls dearer before, issue 13)."""

    async def run() -> pstats.Stats:
        db = await _database(db_url)
        key = f"c-{uuid.uuid4()}"
        await _warm(db, key)
        with profiled() as profile:
            async with db.uow() as uow:
                await uow.session.execute(_GET, {"id": key})
                await uow.session.execute(_BUMP, {"key": key})
                await uow.commit()
        await db.stop()
        return pstats.Stats(profile)

    stats = asyncio.run(run())
    called: dict[tuple[str, str], int] = {}
    for (file, _, name), (_, n, *_) in stats.stats.items():  # type: ignore[attr-defined]
        key = (file.replace("\\", "/"), name)
        called[key] = called.get(key, 0) + n
    connection_machinery = {
        name
        for (file, name) in called
        if file.endswith(("sqlalchemy/engine/base.py", "sqlalchemy/ext/asyncio/engine.py"))
    }
    # Not even the engine's raw_connection(): the pool's idle connection is checked out by the
    # pool's own code without SQLAlchemy's greenlet (round 11, see db._checkout_now).
    assert connection_machinery == set(), connection_machinery
    # The pool's checkout and checkin once each, as the pool's code runs them (round 16: inline,
    # db._checkout_now and _checkin_now; of the pool's layers only the fairy is made).
    platform = {
        name: n for (file, name), n in called.items() if file.endswith("hirepay_platform/db.py")
    }
    assert platform["_checkout_now"] == 1 and platform["_checkin_now"] == 1
    pool = {name for (file, name) in called if "/sqlalchemy/pool/" in file}
    assert pool == {"__init__"}, pool  # _ConnectionFairy's
    sqlalchemy = sum(n for (file, _), n in called.items() if "/sqlalchemy/" in file)
    assert sqlalchemy < 10, sqlalchemy  # ~3 (was ~91, ~48 before round 16)


async def test_the_pool_size_is_a_limit_and_waiters_get_a_released_connection(db):
    key = f"s-{uuid.uuid4()}"
    await _warm(db, key)
    first, second = db.uow(), db.uow()
    await first.__aenter__()
    await second.__aenter__()
    await first.session.execute(_GET, {"id": key})
    await second.session.execute(_GET, {"id": key})
    assert _pool(db).checkedout() == 2

    async def third() -> int:
        async with db.uow() as uow:
            return (await uow.session.execute(_GET, {"id": key})).scalar_one()

    waiting = asyncio.ensure_future(third())
    await asyncio.sleep(0.3)
    assert not waiting.done() and _pool(db).checkedout() == 2  # no overflow
    await first.__aexit__(None, None, None)
    assert await asyncio.wait_for(waiting, 5) == 1
    await second.__aexit__(None, None, None)
    assert _pool(db).checkedout() == 0 and _pool(db).checkedin() == 2


async def _pid(db: Database[CoreUnitOfWork]) -> int:
    async with db.uow() as uow:
        result = await uow.session.execute(PID, {})
        assert isinstance(result, HotResult)
        return result.scalar_one()


async def _terminate(db: Database[CoreUnitOfWork], pid: int) -> None:
    async with db.engine.connect() as other:  # type: ignore[union-attr]
        await other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})


async def test_the_connection_checked_in_last_is_handed_out_next(db_url: str) -> None:
    """LIFO: serial units of work keep reusing the connection used last (whose statements have
    their generic plans), not each pooled connection in turn."""
    db = await _database(db_url, pool_size=3)
    try:
        await _warm(db, "lifo")
        # Two connections checked out at once; `b`'s is checked in first, then `a`'s.
        async with db.uow() as a, db.uow() as b:
            pid_a = (await a.session.execute(PID, {})).scalar_one()
            pid_b = (await b.session.execute(PID, {})).scalar_one()
        assert pid_a != pid_b
        assert [await _pid(db) for _ in range(4)] == [pid_a] * 4
    finally:
        await db.stop()


@pytest.mark.parametrize("where", ["statement", "commit"])
async def test_a_lost_server_is_unavailable_and_its_connection_is_thrown_away(db, where):
    key = f"d-{uuid.uuid4()}"
    await _warm(db, key)
    with pytest.raises(Unavailable) as caught:
        async with db.uow() as uow:
            pid = (await uow.session.execute(PID, {})).scalar_one()
            if where == "commit":
                await uow.session.execute(_BUMP, {"key": key})
            await _terminate(db, pid)
            if where == "statement":
                await uow.session.execute(_BUMP, {"key": key})
            await uow.commit()
    assert caught.value.reason == "DATABASE_UNAVAILABLE"
    cause = caught.value.__cause__
    assert isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated
    assert _pool(db).checkedout() == 0
    pids = {await _pid(db) for _ in range(3)}  # the lost connection never handed out again
    assert pid not in pids
    assert await _n(db, key) == 1  # nothing of the lost transaction applied


async def test_a_cancelled_statement_leaves_no_connection_in_an_unknown_state(db):
    """A unit of work cancelled mid-statement (a deadline): its connection is thrown away, as
    SQLAlchemy does for an exit exception, and the pool goes on with fresh ones."""
    key = f"k-{uuid.uuid4()}"
    await _warm(db, key)
    async with db.uow() as uow:
        await uow.session.execute(_SLEEP, {"s": 0})
    started = asyncio.Event()
    pids: list[int] = []

    async def slow() -> None:
        async with db.uow() as uow:
            await uow.session.execute(_BUMP, {"key": key})
            pids.append((await uow.session.execute(PID, {})).scalar_one())
            started.set()
            await uow.session.execute(_SLEEP, {"s": 5})
            await uow.commit()

    task = asyncio.ensure_future(slow())
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _pool(db).checkedout() == 0
    assert pids[0] not in {await _pid(db) for _ in range(3)}
    assert await _n(db, key) == 1  # the cancelled write never committed


async def test_an_unreachable_server_is_unavailable_then_the_pool_reconnects(
    db_url: str, pg_server_url: str
) -> None:
    proxy = PostgresProxy(pg_server_url).start()
    db = await _database(proxy.url_for(db_url))
    try:
        key = f"u-{uuid.uuid4()}"
        await _warm(db, key)
        proxy.cut()
        with pytest.raises(Unavailable) as caught:  # the pooled connection is lost
            async with db.uow() as uow:
                await uow.session.execute(_GET, {"id": key})
        cause = caught.value.__cause__
        assert isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated
        with pytest.raises(Exception) as by_sqlalchemy:
            await db.engine.connect()  # type: ignore[union-attr]
        with pytest.raises(Unavailable) as caught:  # a new one is refused
            async with db.uow() as uow:
                await uow.session.execute(_GET, {"id": key})
        assert type(caught.value.__cause__) is type(by_sqlalchemy.value)  # as SQLAlchemy's
        assert _pool(db).checkedout() == 0
        proxy.restore()
        async with db.uow() as uow:
            assert (await uow.session.execute(_GET, {"id": key})).scalar_one() == 1
        assert _pool(db).checkedout() == 0
    finally:
        await db.stop()
        proxy.close()


async def test_a_refused_connection_is_raised_as_sqlalchemy_raises_it(
    make_database, pg_server_url: str
) -> None:
    """The pool cannot connect (the database refuses connections): the same exception as
    SQLAlchemy's engine.connect() raises (Connection._handle_dbapi_exception_noconnection)."""
    url = await database_with(make_database, "platform_pooled_refused", metadata)
    db = await _database(url)
    admin = create_engine(pg_server_url)
    name = db.engine.url.database  # type: ignore[union-attr]
    try:
        await _warm(db, "r")
        await db.engine.dispose()  # type: ignore[union-attr]
        async with admin.connect() as conn:
            await conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            await conn.commit()
        with pytest.raises(sa_exc.DBAPIError) as by_sqlalchemy:
            await db.engine.connect()  # type: ignore[union-attr]
        with pytest.raises(sa_exc.DBAPIError) as caught:
            await CoreSession(db.engine).execute(_GET, {"id": "r"})  # type: ignore[arg-type]
        assert type(caught.value) is type(by_sqlalchemy.value)
        assert type(caught.value.orig) is type(by_sqlalchemy.value.orig)
        assert _pool(db).checkedout() == 0
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            await conn.commit()
        await admin.dispose()
        await db.stop()


async def test_dispose_closes_the_connections_pooled_units_of_work_used(db_url: str) -> None:
    db = await _database(db_url, pool_size=3)
    key = f"x-{uuid.uuid4()}"
    await _warm(db, key)
    holders = [db.uow() for _ in range(3)]
    for uow in holders:
        await uow.__aenter__()
    pids = {(await uow.session.execute(PID, {})).scalar_one() for uow in holders}
    for uow in holders:
        await uow.__aexit__(None, None, None)
    await db.stop()
    checker = create_engine(db_url)
    try:
        async with checker.connect() as conn:
            for _ in range(50):
                alive = await conn.scalar(
                    text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                    {"pids": list(pids)},
                )
                if alive == 0:
                    break
                await asyncio.sleep(0.1)
            assert alive == 0
    finally:
        await checker.dispose()


async def test_a_lost_race_on_a_pooled_connection_is_a_conflict(db):
    key = f"l-{uuid.uuid4()}"
    await _warm(db, key)
    async with db.uow() as holder:
        await holder.session.execute(_LOCK_NOWAIT, {"id": key})
        with pytest.raises(Conflict) as caught:
            async with db.uow() as waiter:
                await waiter.session.execute(_LOCK_NOWAIT, {"id": key})
        assert lost_race(caught.value.__cause__)
    assert _pool(db).checkedout() == 0


async def test_a_refused_statement_is_sqlalchemys_error_and_the_transaction_is_rolled_back(db):
    key = f"e-{uuid.uuid4()}"
    await _warm(db, key)
    with pytest.raises(sa_exc.DBAPIError) as caught:
        async with db.uow() as uow:
            await uow.session.execute(_BUMP, {"key": key})
            await uow.session.execute(_PUT, {"id": f"{key}-secret", "n": None})
    assert "parameters hidden" in str(caught.value) and "secret" not in str(caught.value)
    assert caught.value.orig.sqlstate == "23502"  # type: ignore[union-attr]
    assert await _n(db, key) == 1 and _pool(db).checkedout() == 0


async def test_a_statement_that_is_not_hot_joins_the_same_transaction(db, wrapped):
    key = f"m-{uuid.uuid4()}"
    await _warm(db, key)
    wrapped.clear()
    async with db.uow() as uow:
        await uow.session.execute(_BUMP, {"key": key})
        pid = (await uow.session.execute(PID, {})).scalar_one()
        assert await uow.session.scalar(text("SELECT pg_backend_pid()")) == pid
        assert await uow.session.scalar(text("SELECT txid_current_if_assigned() IS NOT NULL"))
        await uow.session.execute(_BUMP, {"key": key})  # on SQLAlchemy's way from now on
        await uow.commit()
    assert len(wrapped) == 1 and await _n(db, key) == 3
    async with db.uow() as uow:  # wrapped after a write, nothing run SQLAlchemy's way: committed
        await uow.session.execute(_BUMP, {"key": key})
        assert isinstance(await uow.session.connection(), AsyncConnection)
        await uow.commit()
    assert await _n(db, key) == 4
    with pytest.raises(sa_exc.DBAPIError):
        async with db.uow() as uow:
            await uow.session.execute(_BUMP, {"key": key})
            await uow.session.execute(text("SELECT 1/0"))
            await uow.commit()
    assert await _n(db, key) == 4  # the hot write rolled back with the rest
    assert _pool(db).checkedout() == 0


async def test_listeners_added_while_a_unit_of_work_runs_see_its_next_statements(db):
    key = f"t-{uuid.uuid4()}"
    await _warm(db, key)
    seen: list[str] = []

    def listen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    engine = db.engine.sync_engine  # type: ignore[union-attr]
    try:
        async with db.uow() as uow:
            await uow.session.execute(_BUMP, {"key": key})
            event.listen(engine, "before_cursor_execute", listen)
            result = await uow.session.execute(_BUMP, {"key": key})
            assert not isinstance(result, HotResult)
            await uow.commit()
    finally:
        event.remove(engine, "before_cursor_execute", listen)
    assert len(seen) == 1 and "UPDATE pooled_items" in seen[0]
    assert await _n(db, key) == 3  # both writes, one transaction, committed


async def test_execute_alone_and_connection_on_a_pooled_session(
    db, round_trips: RoundTrips, wrapped
):
    key = f"a-{uuid.uuid4()}"
    await _warm(db, key)
    for _ in range(2):
        async with db.uow() as uow:
            await execute_alone(uow.session, _BUMP, {"key": key})
    with round_trips:
        async with db.uow() as uow:
            assert (await uow.session.execute(_GET, {"id": key})).scalar_one() == 3
            assert (await execute_alone(uow.session, _BUMP, {"key": key})).scalar_one() == 4
    assert round_trips.transaction_control == []  # a plain read, then a write alone
    assert await _n(db, key) == 4
    wrapped.clear()
    async with db.uow() as uow:  # through the write batch's session: no Connection either
        batched = BatchedSession(uow.session)  # type: ignore[arg-type]
        assert (await execute_alone(batched, _BUMP, {"key": key})).scalar_one() == 5
    assert wrapped == [] and await _n(db, key) == 5
    session = CoreSession(db.engine)  # type: ignore[arg-type]
    try:
        await session.execute(_GET, {"id": key})
        connection = await session.connection()
        assert isinstance(connection, AsyncConnection)
        assert (
            await connection.scalar(text("SELECT pg_backend_pid()"))
            == (await session.execute(PID, {})).scalar_one()
        )
    finally:
        await session.close()
    assert _pool(db).checkedout() == 0


@pytest.fixture
def echo_logging(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level("INFO", logger="sqlalchemy.engine.Engine"):
        yield caplog


async def test_statements_go_sqlalchemys_way_while_it_logs_them(db, echo_logging, wrapped):
    key = f"g-{uuid.uuid4()}"
    await _warm(db, key)
    wrapped.clear()
    async with db.uow() as uow:
        result = await uow.session.execute(_GET, {"id": key})
        assert not isinstance(result, HotResult) and result.scalar_one() == 1
    assert len(wrapped) == 1
    assert any("pooled_items" in r.getMessage() for r in echo_logging.records)
