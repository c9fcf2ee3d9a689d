"""What pool16's hot path (issue 13, round 16) left unguarded, on real PostgreSQL.

A connection whose server transaction the adapter did not begin (a BEGIN sent past it, a unit of
work cancelled mid-statement) never goes back into the pool open: whichever way it is given back
(db._checkin_now inline, or SQLAlchemy's checkin), it is rolled back, so the next unit of work's
plain reads and execute_alone writes never run inside it, and nothing of it is committed. And the
hot path's handling of a stale type cache (asyncpg's OutdatedSchemaCacheError, copied into
db._execute_hot) is driven for real: a composite type altered between two runs of a prepared hot
statement fails the run as SQLAlchemy's own path fails it, and the next run reloads and works."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import MetaData, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import asyncpg as sa_asyncpg
from sqlalchemy.engine import make_url

from hirepay_platform.db import (
    Database,
    HotStatement,
    async_url,
    dbapi_connection,
    execute_alone,
)
from hirepay_platform.errors import Unavailable
from tests.platform.counters import IN_TRANSACTION, PID, CoreUnitOfWork, counters, start_database
from tests.support.pg_round_trips import RoundTrips
from tests.support.pg_schema import database_with

metadata = MetaData()
rows, _PUT, _BUMP = counters(metadata, "poolguard16_rows")
_READ = HotStatement(text("SELECT n FROM poolguard16_rows WHERE id = :key"))
# A row of a composite type (asyncpg's type cache: its attributes) and its hot read.
_TYPED = HotStatement(text("SELECT b FROM poolguard16_typed WHERE a = :a"))


@pytest.fixture(scope="module")
async def db_url(make_database) -> str:
    url = await database_with(make_database, "platform_poolguard16", metadata)
    connection = await _connect(url)
    try:
        await connection.execute(
            "CREATE TYPE poolguard16_pair AS (x int, y int);"
            "CREATE TABLE poolguard16_typed (a int PRIMARY KEY, b poolguard16_pair);"
            "INSERT INTO poolguard16_typed VALUES (1, (2, 3));"
        )
    finally:
        await connection.close()
    return url


async def _connect(url: str) -> asyncpg.Connection:
    """A connection of asyncpg's own to the test database, outside the pool."""
    _, kwargs = sa_asyncpg.dialect().create_connect_args(make_url(async_url(url)))
    return await asyncpg.connect(**kwargs)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database[CoreUnitOfWork]]:
    database = await start_database(db_url, "poolguard16_rows", 1)  # one connection: reused
    async with database.uow() as uow:  # every hot statement run once by SQLAlchemy (its plan)
        await uow.session.execute(_PUT, {"id": "k", "n": 0})
        await uow.session.execute(_BUMP, {"key": "k"})
        await uow.session.execute(_READ, {"key": "k"})
        await uow.session.execute(PID, {})
        await uow.session.execute(IN_TRANSACTION, {})
        await uow.commit()
    yield database
    await database.stop()


def _pool(db: Database[Any]) -> Any:
    return db.engine.sync_engine.pool  # type: ignore[union-attr]


async def _new_counters(db: Database[CoreUnitOfWork], *keys: str) -> None:
    async with db.uow() as uow:
        for key in keys:
            await uow.session.execute(_PUT, {"id": key, "n": 0})
        await uow.commit()


async def _assert_clean(db: Database[CoreUnitOfWork], pid: int | None = None) -> None:
    """The pool's next unit of work gets a connection with no transaction open on the server
    (the same one, `pid`, when it was kept), and can begin, write and commit on it."""
    async with db.uow() as uow:
        found = (await uow.session.execute(PID, {})).scalar_one()  # (a plain read: no BEGIN)
        adapted = await dbapi_connection(uow.session)
        assert not adapted._connection._protocol.is_in_transaction()
        assert (await uow.session.execute(IN_TRANSACTION, {})).scalar_one() is False
        await uow.session.execute(_BUMP, {"key": "k"})  # its BEGIN is not refused
        await uow.commit()
    if pid is not None:
        assert found == pid


async def _n(url: str, key: str) -> int:
    """A counter as committed, read on a connection of its own."""
    connection = await _connect(url)
    try:
        return await connection.fetchval(  # type: ignore[no-any-return]
            "SELECT n FROM poolguard16_rows WHERE id = $1", key
        )
    finally:
        await connection.close()


@pytest.mark.parametrize("kind", ["hot", "sqlalchemy"])
async def test_a_transaction_left_open_is_rolled_back_before_the_pool_has_it_again(
    db, db_url: str, kind: str
) -> None:
    """A BEGIN sent past the adapter and left open: the next unit of work's execute_alone write
    would run inside it, its `UPDATE` answered, never committed. Given back inline (hot
    statements only) or by SQLAlchemy's checkin (a statement that is not hot), it is rolled back
    first, on the same connection (kept warm)."""
    key = f"o-{uuid.uuid4()}"
    await _new_counters(db, key)
    async with db.uow() as uow:
        if kind == "hot":
            pid = (await uow.session.execute(PID, {})).scalar_one()
        else:
            pid = (await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        adapted = await dbapi_connection(uow.session)
        await adapted._connection.execute("BEGIN")  # (not the adapter's: no _transaction)
        await adapted._connection.execute(  # work of that transaction, never to be committed
            "UPDATE poolguard16_rows SET n = 100 WHERE id = $1", key
        )
    assert _pool(db).checkedout() == 0
    async with db.uow() as uow:
        assert (await uow.session.execute(PID, {})).scalar_one() == pid  # (the one connection)
        changed = await execute_alone(uow.session, _BUMP, {"key": key})
        assert changed.scalar_one() == 1  # (not 101: the left transaction's update is gone)
    assert await _n(db_url, key) == 1  # committed when execute_alone returned
    await _assert_clean(db, pid)


async def test_a_commit_over_a_transaction_it_did_not_begin_fails_and_commits_nothing(
    db, db_url: str
) -> None:
    """SQLAlchemy's Connection ends its transaction by the adapter's commit, then gives the
    connection back with no reset of the pool's: a transaction the adapter did not begin is
    rolled back there, and the commit fails (what ran in it was never committed)."""
    key = f"c-{uuid.uuid4()}"
    await _new_counters(db, key)
    with pytest.raises(Unavailable) as raised:  # (nothing committed: retryable)
        async with db.uow() as uow:
            connection = await uow.session.connection()  # SQLAlchemy's own way from now on
            adapted = await dbapi_connection(uow.session)
            await connection.execute(text("SELECT 1"))  # (a plain read: no BEGIN)
            await adapted._connection.execute("BEGIN")
            await execute_alone(uow.session, _BUMP, {"key": key})  # inside the foreign one
            await uow.commit()
    assert isinstance(raised.value.__cause__, sa_exc.InterfaceError)
    assert "did not begin" in str(raised.value.__cause__)
    assert _pool(db).checkedout() == 0
    assert await _n(db_url, key) == 0
    await _assert_clean(db)


# The round trips of the write below, in order: BEGIN, the two bumps, COMMIT.
_WRITE_TRIPS = 4


@pytest.mark.parametrize("at", range(1, _WRITE_TRIPS + 1))
@pytest.mark.parametrize("kind", ["hot", "sqlalchemy"])
async def test_a_write_cancelled_at_each_round_trip_leaves_a_clean_connection(
    db, db_url: str, round_trips: RoundTrips, monkeypatch: pytest.MonkeyPatch, at: int, kind: str
) -> None:
    """A unit of work cancelled while it waits for each of its round trips (the statement sent,
    its answer not read yet, as a client's deadline cancels it): the pool's next unit of work
    gets a connection with no transaction open, and the two bumps are committed both or not at
    all (the COMMIT's may have applied)."""
    a, b = f"a-{uuid.uuid4()}", f"b-{uuid.uuid4()}"
    await _new_counters(db, a, b)
    sent = 0
    task: asyncio.Task[None] | None = None

    def note(trip_kind: str, sql: str) -> None:
        nonlocal sent
        RoundTrips.note(round_trips, trip_kind, sql)
        sent += 1
        if sent == at and task is not None:  # cancelled once it waits for this one's answer
            asyncio.get_running_loop().call_soon(task.cancel)

    async def write() -> None:
        async with db.uow() as uow:
            if kind == "sqlalchemy":
                await uow.session.connection()  # SQLAlchemy's Connection from the start
            await uow.session.execute(_BUMP, {"key": a})
            await uow.session.execute(_BUMP, {"key": b})
            await uow.commit()

    await write()  # (every statement prepared: the round trips below are the same each run)
    await write()
    monkeypatch.setattr(round_trips, "note", note)
    with round_trips:
        task = asyncio.create_task(write())
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [kind for kind, _ in round_trips.sent][:at] == [
        "simple",
        "statement",
        "statement",
        "simple",
    ][:at]
    assert _pool(db).checkedout() == 0
    await _assert_clean(db)
    committed = (await _n(db_url, a), await _n(db_url, b))
    assert committed in {(2, 2), (3, 3)}, committed


# The same read, run by SQLAlchemy's execution (not hot): the adapter's cursor.
_TYPED_SQLALCHEMY = text("SELECT b FROM poolguard16_typed WHERE a = :a")


@pytest.mark.parametrize("kind", ["hot", "sqlalchemy"])
async def test_a_stale_type_cache_is_reloaded_and_the_statement_prepared_again(
    db, db_url: str, kind: str
) -> None:
    """A composite type altered between two runs of a prepared statement (asyncpg's
    test_type_cache_invalidation_*): the run fails (asyncpg's OutdatedSchemaCacheError: its
    types reloaded, the statement closed), and the next run prepares it again and reads the new
    shape, as asyncpg's own statement cache does. SQLAlchemy's adapter kept the closed statement
    in its cache: every later run on that connection failed, hot or not."""
    statement: Any = _TYPED if kind == "hot" else _TYPED_SQLALCHEMY
    async with db.uow() as uow:
        assert (await uow.session.execute(statement, {"a": 1})).scalar_one() == (2, 3)
    async with db.uow() as uow:
        assert (await uow.session.execute(statement, {"a": 1})).scalar_one() == (2, 3)
        adapted = await dbapi_connection(uow.session)
        prepared = adapted._prepared_statement_cache[
            "SELECT b FROM poolguard16_typed WHERE a = $1"
        ][0]
    other = await _connect(db_url)
    try:
        await other.execute("ALTER TYPE poolguard16_pair ADD ATTRIBUTE z text")
        with pytest.raises(sa_exc.DBAPIError, match="unexpected number of attributes"):
            async with db.uow() as uow:
                await uow.session.execute(statement, {"a": 1})
        assert prepared._state.closed
        async with db.uow() as uow:  # prepared again, the types reloaded: the new shape
            assert (await uow.session.execute(statement, {"a": 1})).scalar_one() == (2, 3, None)
        async with db.uow() as uow:  # and from the adapter's cache again
            assert (await uow.session.execute(statement, {"a": 1})).scalar_one() == (2, 3, None)
    finally:
        await other.execute("ALTER TYPE poolguard16_pair DROP ATTRIBUTE z")
        await other.close()
    await _assert_clean(db)
