"""A unit of work that ended its transaction gives its connection back without the pool's
rollback-on-return (db._checkin_now, issue 13: a dialect do_rollback, the fairy's attribute
look-up and the adapter's no-op rollback per unit of work), as SQLAlchemy's own Connection.close()
does after ending its transaction; on real PostgreSQL. What was not committed is still rolled
back (CoreSession.close), the next unit of work gets the connection with no transaction open,
and a pool with a reset listener still runs it, told the transaction was not reset (PAY-6)."""

from __future__ import annotations

import pstats
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import MetaData, event, select

from hirepay_platform.db import Database
from tests.platform.counters import PID, counters, start_database
from tests.support.pg_schema import database_with
from tests.support.python_calls import profiled

metadata = MetaData()
rows, _PUT, _BUMP = counters(metadata, "checkin_reset_rows")


@pytest.fixture(scope="module")
async def db_url(make_database) -> str:
    return await database_with(make_database, "platform_checkin_reset", metadata)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database[Any]]:
    database = await start_database(db_url, "checkin_reset_rows", 1, 0)
    yield database
    await database.stop()


def _pool(db: Database[Any]) -> Any:
    return db.engine.sync_engine.pool  # type: ignore[union-attr]


def _idle_in_transaction(db: Database[Any]) -> bool:
    """Whether the pool's idle connection (the only one) has a transaction open on the server."""
    record = _pool(db)._pool._queue._queue[-1]
    return bool(record.dbapi_connection._connection.is_in_transaction())


async def _n(db: Database[Any], key: str) -> int | None:
    async with db.engine.connect() as conn:  # type: ignore[union-attr]
        return await conn.scalar(select(rows.c.n).where(rows.c.id == key))


async def test_a_unit_of_work_goes_back_without_the_pools_rollback_and_nothing_left_open(db):
    key = f"r-{uuid.uuid4()}"
    async with db.uow() as uow:  # every statement run once by SQLAlchemy
        await uow.session.execute(_PUT, {"id": key, "n": 1})
        await uow.session.execute(_BUMP, {"key": "nobody"})
        await uow.session.execute(PID, {})
        await uow.commit()
    with profiled() as profile:
        async with db.uow() as uow:  # committed
            await uow.session.execute(_BUMP, {"key": key})
            await uow.commit()
        async with db.uow() as uow:  # not committed: the session rolls it back itself
            await uow.session.execute(_BUMP, {"key": key})
        async with db.uow() as uow:  # read only (before BEGIN)
            await uow.session.execute(PID, {})
    called = {name for (_, _, name) in pstats.Stats(profile).stats}  # type: ignore[attr-defined]
    assert "do_rollback" not in called, called
    assert not _idle_in_transaction(db)
    assert _pool(db).checkedout() == 0
    assert await _n(db, key) == 2  # the committed bump only


async def test_a_reset_listener_still_runs_and_is_told_nothing_was_reset(db):
    key = f"l-{uuid.uuid4()}"
    async with db.uow() as uow:
        await uow.session.execute(_PUT, {"id": key, "n": 1})
        await uow.commit()
    seen: list[bool] = []

    def on_reset(dbapi_connection: Any, record: Any, state: Any) -> None:
        seen.append(state.transaction_was_reset)

    event.listen(_pool(db), "reset", on_reset)
    try:
        async with db.uow() as uow:
            await uow.session.execute(_BUMP, {"key": key})
    finally:
        event.remove(_pool(db), "reset", on_reset)
    assert seen == [False]  # SQLAlchemy's way, as before
    assert not _idle_in_transaction(db)
    assert await _n(db, key) == 1
