"""The floor of a unit of work of hot statements (issue 13, round 15), on real PostgreSQL: what
it sends (one round trip per statement, BEGIN only before the first that needs a transaction,
COMMIT, and nothing when the connection goes back to the pool: no reset ROLLBACK after a COMMIT
or after plain reads), and the platform's own Python around each statement: the session's
execute hands the hot statement's run back to be awaited (no coroutine frame of its own), and
the adapter's connection lock is taken and given back by its acquire and release, not through
`async with` (its __aenter__ and __aexit__), and a result of one row made without a list
comprehension. Statements of one session run concurrently still
wait for each other on that lock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import MetaData

from hirepay_platform.db import Database
from tests.platform.counters import PID, CoreUnitOfWork, counters, start_database
from tests.support.pg_round_trips import RoundTrips
from tests.support.pg_schema import database_with
from tests.support.python_calls import entered

metadata = MetaData()
rows, _PUT, _BUMP = counters(metadata, "floor_rows")


@pytest.fixture(scope="module")
async def db_url(make_database) -> str:
    return await database_with(make_database, "platform_floor", metadata)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database[CoreUnitOfWork]]:
    database = await start_database(db_url, "floor_rows", 1)
    async with database.uow() as uow:  # every statement run once by SQLAlchemy (its plan made)
        await uow.session.execute(_PUT, {"id": "k", "n": 0})
        await uow.session.execute(_BUMP, {"key": "k"})
        await uow.session.execute(PID, {})
        await uow.commit()
    yield database
    await database.stop()


async def _write(db: Database[CoreUnitOfWork], statements: int = 1) -> None:
    async with db.uow() as uow:
        for _ in range(statements):
            await uow.session.execute(_BUMP, {"key": "k"})
        await uow.commit()


async def test_a_unit_of_work_sends_its_statements_begin_and_commit_and_nothing_at_checkin(
    db, round_trips: RoundTrips
) -> None:
    with round_trips:
        await _write(db)
    assert round_trips.transaction_control == ["BEGIN;", "COMMIT;"]
    assert len(round_trips.statements) == 1
    assert not any(kind == "prepare" for kind, _ in round_trips.sent)  # (kept on the connection)
    with round_trips:
        async with db.uow() as uow:  # plain reads only: no BEGIN, nothing to roll back
            await uow.session.execute(PID, {})
            await uow.session.execute(PID, {})
    assert round_trips.transaction_control == []
    assert len(round_trips.sent) == 2
    with round_trips:
        async with db.uow() as uow:  # not committed: its own ROLLBACK, none at checkin
            await uow.session.execute(_BUMP, {"key": "k"})
    assert round_trips.transaction_control == ["BEGIN;", "ROLLBACK;"]


async def test_a_hot_statements_own_python_is_its_run_and_the_locks_acquire_and_release(
    db,
) -> None:
    await _write(db, 3)
    with entered() as seen:
        for _ in range(10):
            await _write(db, 3)
    per_uow = {key: n / 10 for key, n in seen.items()}
    # The session's execute entered once per statement, never resumed: its run is awaited
    # itself (was 3 per statement with a BEGIN before it, 2 without).
    assert per_uow[("hirepay_platform", "execute")] == 3
    # The lock's acquire and release, not __aenter__ and __aexit__ around them.
    assert ("asyncio", "__aenter__") not in per_uow and ("asyncio", "__aexit__") not in per_uow
    platform = sum(n for (where, _), n in per_uow.items() if where == "hirepay_platform")
    # A one-row result's row made with no list comprehension's frame: the statement's
    # arguments' is the only one left.
    assert per_uow[("hirepay_platform", "<listcomp>")] == 3
    assert platform <= 37, per_uow  # was 44 (a write and two more, committed)


async def test_statements_of_one_session_run_at_once_still_wait_for_each_other(db) -> None:
    async with db.uow() as uow:
        before = (await uow.session.execute(_BUMP, {"key": "k"})).scalar_one()
        results = await asyncio.gather(
            *(uow.session.execute(_BUMP, {"key": "k"}) for _ in range(5))
        )
        assert sorted(r.scalar_one() for r in results) == [before + i for i in range(1, 6)]
        await uow.commit()
    async with db.uow() as uow:
        assert (await uow.session.execute(_BUMP, {"key": "k"})).scalar_one() == before + 6
        await uow.commit()
