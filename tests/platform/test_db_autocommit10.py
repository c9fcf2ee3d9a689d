"""A unit of work whose statements each commit by themselves (db.autocommit, issue 13), on real
PostgreSQL: hot statements run on the pool's connection with no SQLAlchemy Connection and no
BEGIN or COMMIT, every statement is durable when it returns (PAY-6: nothing acknowledged before
it is stored), the connection goes back to the pool transactional again, and anything that needs
SQLAlchemy's Connection gets it in AUTOCOMMIT, as the isolation level set on the session did."""

from __future__ import annotations

import asyncio
import pstats
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import (
    Column,
    DateTime,
    MetaData,
    Table,
    Text,
    event,
    select,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from hirepay_platform.db import (
    Database,
    HotStatement,
    autocommit,
    create_engine,
    lease_due,
)
from hirepay_platform.errors import Unavailable
from hirepay_platform.write_batch import BatchedSession
from tests.platform.counters import IN_TRANSACTION, PID, CoreUnitOfWork, counters, start_database
from tests.support.pg_round_trips import RoundTrips
from tests.support.pg_schema import database_with
from tests.support.python_calls import profiled

metadata = MetaData()
rows, _PUT, _BUMP = counters(metadata, "autocommit_rows")
due_rows = Table(
    "autocommit_due",
    metadata,
    Column("id", Text, primary_key=True),
    Column("next_at", DateTime(timezone=True), nullable=False),
)


@pytest.fixture(scope="module")
async def db_url(make_database) -> str:
    return await database_with(make_database, "platform_autocommit", metadata)


async def _database(url: str, pool_size: int = 1) -> Database[CoreUnitOfWork]:
    # One pooled connection: each unit of work gets the one the one before it gave back.
    return await start_database(url, "autocommit_rows", pool_size)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database[CoreUnitOfWork]]:
    database = await _database(db_url)
    yield database
    await database.stop()


async def _warm(db: Database[CoreUnitOfWork], key: str) -> None:
    """Every statement run once by SQLAlchemy (their plans made), the row `key` stored."""
    async with db.uow() as uow:
        await uow.session.execute(_PUT, {"id": key, "n": 1})
        await uow.session.execute(_BUMP, {"key": "nobody"})
        await uow.session.execute(PID, {})
        await uow.session.execute(IN_TRANSACTION, {})
        await uow.commit()


async def _n(db: Database[CoreUnitOfWork], key: str) -> int | None:
    """The row's value as another connection sees it (committed only): asyncpg's own, so neither
    SQLAlchemy's Connections nor the round trips counted include it."""
    url = db.engine.url.set(drivername="postgresql")  # type: ignore[union-attr]
    conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        return await conn.fetchval("SELECT n FROM autocommit_rows WHERE id = $1", key)
    finally:
        await conn.close()


def _pool(db: Database[CoreUnitOfWork]) -> Any:
    return db.engine.sync_engine.pool  # type: ignore[union-attr]


async def test_each_hot_statement_commits_by_itself_with_no_begin_and_no_connection_object(
    db, wrapped, round_trips: RoundTrips
):
    key = f"a-{uuid.uuid4()}"
    await _warm(db, key)
    wrapped.clear()
    with round_trips:
        async with db.uow() as uow:
            await autocommit(uow.session)
            assert (await uow.session.execute(_BUMP, {"key": key})).scalar_one() == 2
            assert (await uow.session.execute(IN_TRANSACTION, {})).scalar_one() is False
            assert await _n(db, key) == 2  # durable before the unit of work commits
            await uow.session.execute(_BUMP, {"key": key})
            # No commit: nothing is left to roll back, both statements stay.
    assert round_trips.transaction_control == []
    assert [sql.split()[0] for sql in round_trips.statements] == ["UPDATE", "SELECT", "UPDATE"]
    assert wrapped == [] and _pool(db).checkedout() == 0
    assert await _n(db, key) == 3
    # The same pooled connection, transactional again for the next unit of work.
    async with db.uow() as uow:
        await uow.session.execute(_BUMP, {"key": key})
        assert (await uow.session.execute(IN_TRANSACTION, {})).scalar_one() is True
        # No commit: rolled back.
    assert await _n(db, key) == 3


async def test_autocommit_through_the_batched_session_after_its_waiting_writes_is_refused(db):
    """BatchedSession's autocommit() sends the waiting writes first: they began the transaction,
    so AUTOCOMMIT is refused as SQLAlchemy refuses it on a begun Connection."""
    key = f"b-{uuid.uuid4()}"
    await _warm(db, key)
    async with db.uow() as uow:
        batched = BatchedSession(uow.session)
        await autocommit(batched)  # nothing waiting: allowed
        assert (await batched.execute(_BUMP, {"key": key})).scalar_one() == 2
    assert await _n(db, key) == 2
    async with db.uow() as uow:
        batched = BatchedSession(uow.session)
        await batched.batch.insert(rows, [{"id": f"{key}-w", "n": 7}])
        with pytest.raises(sa_exc.InvalidRequestError):
            await autocommit(batched)
    assert await _n(db, f"{key}-w") is None
    assert _pool(db).checkedout() == 0


async def test_autocommit_once_the_transaction_has_begun_is_refused_as_sqlalchemy_refuses_it(db):
    key = f"r-{uuid.uuid4()}"
    await _warm(db, key)
    async with db.uow() as uow:
        await uow.session.execute(_BUMP, {"key": key})
        with pytest.raises(sa_exc.InvalidRequestError):
            await autocommit(uow.session)
    assert await _n(db, key) == 1  # the begun transaction rolled back, as before


async def test_a_statement_that_is_not_hot_goes_through_sqlalchemy_in_autocommit(db, wrapped):
    key = f"n-{uuid.uuid4()}"
    await _warm(db, key)
    wrapped.clear()
    async with db.uow() as uow:
        await autocommit(uow.session)
        await uow.session.execute(_BUMP, {"key": key})  # hot, on the pooled connection
        # Not hot: SQLAlchemy's Connection on the same connection, in AUTOCOMMIT too.
        await uow.session.execute(rows.update().where(rows.c.id == key).values(n=rows.c.n + 10))
        assert await uow.session.scalar(text("SELECT txid_current_if_assigned()")) is None
        assert await _n(db, key) == 12
        await uow.session.execute(_BUMP, {"key": key})
        await uow.rollback()  # nothing to roll back
    assert len(wrapped) == 1  # the unit of work's, once a statement was not hot
    assert await _n(db, key) == 13
    async with db.uow() as uow:  # the connection SQLAlchemy put back: transactional again
        await uow.session.execute(_BUMP, {"key": key})
    assert await _n(db, key) == 13


async def test_with_event_listeners_every_statement_goes_through_sqlalchemy_in_autocommit(db):
    key = f"e-{uuid.uuid4()}"
    await _warm(db, key)
    seen: list[str] = []

    def listen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement.split()[0])

    sync_engine = db.engine.sync_engine  # type: ignore[union-attr]
    event.listen(sync_engine, "before_cursor_execute", listen)
    try:
        async with db.uow() as uow:
            await autocommit(uow.session)
            await uow.session.execute(_BUMP, {"key": key})
            assert await _n(db, key) == 2
    finally:
        event.remove(sync_engine, "before_cursor_execute", listen)
    assert seen == ["UPDATE"]
    assert await _n(db, key) == 2


async def test_a_refused_statement_in_autocommit_is_sqlalchemys_error_and_leaves_the_others(db):
    key = f"x-{uuid.uuid4()}"
    await _warm(db, key)
    with pytest.raises(sa_exc.IntegrityError) as caught:
        async with db.uow() as uow:
            await autocommit(uow.session)
            await uow.session.execute(_BUMP, {"key": key})
            await uow.session.execute(_PUT, {"id": f"{key}-secret", "n": None})
    assert "parameters hidden" in str(caught.value) and "secret" not in str(caught.value)
    assert await _n(db, key) == 2  # the statement before committed by itself
    assert _pool(db).checkedout() == 0
    async with db.uow() as uow:  # the connection is transactional again after the error
        await uow.session.execute(_BUMP, {"key": key})
        assert (await uow.session.execute(IN_TRANSACTION, {})).scalar_one() is True
    assert await _n(db, key) == 2


async def test_a_lost_server_in_autocommit_is_unavailable(db):
    key = f"d-{uuid.uuid4()}"
    await _warm(db, key)
    with pytest.raises(Unavailable) as caught:
        async with db.uow() as uow:
            await autocommit(uow.session)
            pid = (await uow.session.execute(PID, {})).scalar_one()
            url = db.engine.url.set(drivername="postgresql")  # type: ignore[union-attr]
            other = await asyncpg.connect(url.render_as_string(hide_password=False))
            await other.execute("SELECT pg_terminate_backend($1)", pid)
            await other.close()
            await uow.session.execute(_BUMP, {"key": key})
    assert caught.value.reason == "DATABASE_UNAVAILABLE"
    cause = caught.value.__cause__
    assert isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated
    assert _pool(db).checkedout() == 0
    assert await _n(db, key) == 1


def test_an_autocommit_unit_of_work_costs_no_connection_machinery(db_url: str) -> None:
    """The Python a warm autocommit unit of work of one hot insert-first costs (a webhook's
    insert-first, a worker's lease): no SQLAlchemy Connection, AsyncConnection or transaction
    object (which cost about 60 Python calls more, issue 13)."""

    async def run() -> pstats.Stats:
        db = await _database(db_url)
        await _warm(db, "p")
        with profiled() as profile:
            async with db.uow() as uow:
                await autocommit(uow.session)
                await uow.session.execute(_PUT, {"id": f"p-{uuid.uuid4()}", "n": 1})
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
    total = sum(called.values())
    assert total < 200, total


async def test_an_orm_session_is_put_in_autocommit_as_before(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        key = f"o-{uuid.uuid4()}"
        async with AsyncSession(engine) as session:
            await autocommit(session)
            await session.execute(_PUT.statement, {"id": key, "n": 5})
            # Not committed by the session: the statement committed by itself.
        async with engine.connect() as conn:
            assert await conn.scalar(select(rows.c.n).where(rows.c.id == key)) == 5
    finally:
        await engine.dispose()


async def test_a_hot_lease_in_autocommit_costs_no_connection_object(db, wrapped):
    """db.lease_due's statement made hot by its caller: a worker's lease in autocommit (payments'
    poller, booking and payout workers) runs on the pooled connection alone, committed when it
    returns."""
    lease = HotStatement(lease_due(due_rows, due_rows.c.next_at, "next_at"))
    now = datetime.now(UTC)
    ids = [f"l-{uuid.uuid4()}" for _ in range(3)]
    async with db.uow() as uow:
        await uow.session.execute(
            due_rows.insert(), [{"id": i, "next_at": now - timedelta(hours=1)} for i in ids]
        )
        await uow.commit()
    until = now + timedelta(days=3650)  # past every other test's rows
    leased: list[str] = []
    for round_ in range(2):  # the first run is SQLAlchemy's (its plan made), the second hot
        wrapped.clear()
        async with db.uow() as uow:
            await autocommit(uow.session)
            params = {"now": now, "limit": 1, "until": until}
            leased += [r.id for r in (await uow.session.execute(lease, params)).all()]
        assert len(leased) == round_ + 1
    assert wrapped == []  # the second round: no SQLAlchemy Connection
    url = db.engine.url.set(drivername="postgresql")  # type: ignore[union-attr]
    conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:  # committed by themselves (no commit was called), seen from another connection
        found = await conn.fetch("SELECT id FROM autocommit_due WHERE next_at = $1", until)
    finally:
        await conn.close()
    assert sorted(r["id"] for r in found) == sorted(leased)


async def test_a_lease_with_an_in_list_runs_in_autocommit_the_sqlalchemy_way(db):
    """db.lease_due with an expanding IN among its conditions (payments' refunds lease) is no
    hot statement: in autocommit it goes through SQLAlchemy's Connection, every run, committed
    when it returns."""
    now = datetime.now(UTC)
    ids = [f"i-{uuid.uuid4()}" for _ in range(2)]
    async with db.uow() as uow:
        await uow.session.execute(
            due_rows.insert(), [{"id": i, "next_at": now - timedelta(hours=1)} for i in ids]
        )
        await uow.commit()
    lease = lease_due(due_rows, due_rows.c.next_at, "next_at", due_rows.c.id.in_(ids))
    until = now + timedelta(days=1)
    leased: list[str] = []
    for _ in range(2):
        async with db.uow() as uow:
            await autocommit(uow.session)
            params = {"now": now, "limit": 1, "until": until}
            leased += [r.id for r in (await uow.session.execute(lease, params)).all()]
    assert sorted(leased) == sorted(ids)
    url = db.engine.url.set(drivername="postgresql")  # type: ignore[union-attr]
    conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        found = await conn.fetch("SELECT id FROM autocommit_due WHERE next_at = $1", until)
    finally:
        await conn.close()
    assert sorted(r["id"] for r in found) == sorted(ids)
