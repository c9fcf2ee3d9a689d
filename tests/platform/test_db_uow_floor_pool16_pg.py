"""The Python floor of a unit of work (issue 13, round 16), on real PostgreSQL: SQLAlchemy's pool
checkout and checkin done inline as the pool's code does them (db._checkout_now, _checkin_now),
a hot statement's BEGIN, run and COMMIT sent by asyncpg's protocol itself (db._execute_hot,
db._Begun) and its prepared statement found in the adapter's cache inline. Pinned by package
(about 10% of margin), with what must not change: a connection left in a transaction on the
server is never joined as if clean, a COMMIT that fails ends the transaction and leaves the
connection clean, a lost fairy gives its connection back as SQLAlchemy's checkout arranges, and
a pool that logs its checkouts goes SQLAlchemy's way."""

from __future__ import annotations

import gc
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text, UniqueConstraint, bindparam, insert
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool.base import _ConnectionRecord

from hirepay_platform.db import (
    CoreSession,
    Database,
    HotStatement,
    _Begun,
    _checkin_now,
    _checkout_now,
    dbapi_connection,
)
from tests.platform.counters import IN_TRANSACTION, PID, CoreUnitOfWork, counters, start_database
from tests.support.pg_round_trips import RoundTrips
from tests.support.pg_schema import database_with
from tests.support.python_calls import entered_by_package

metadata = MetaData()
rows, _PUT, _BUMP = counters(metadata, "pool16_rows")
# A key checked when the transaction commits (a deferred unique constraint): its COMMIT fails.
deferred = Table(
    "pool16_deferred",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", Text, nullable=False),
    UniqueConstraint("key", deferrable=True, initially="DEFERRED"),
)
_ADD = HotStatement(insert(deferred).values(id=bindparam("id"), key=bindparam("key")))

_PACKAGES = ("sqlalchemy", "asyncpg", "hirepay_platform")


def _id() -> int:
    return uuid.uuid4().int % 2**31


@pytest.fixture(scope="module")
async def db_url(make_database) -> str:
    return await database_with(make_database, "platform_pool16", metadata)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database[CoreUnitOfWork]]:
    database = await start_database(db_url, "pool16_rows", 1)
    async with database.uow() as uow:  # every statement run once by SQLAlchemy (its plan made)
        await uow.session.execute(_PUT, {"id": "k", "n": 0})
        await uow.session.execute(_BUMP, {"key": "k"})
        await uow.session.execute(PID, {})
        await uow.session.execute(IN_TRANSACTION, {})
        await uow.session.execute(_ADD, {"id": _id(), "key": f"warm-{uuid.uuid4()}"})
        await uow.commit()
    yield database
    await database.stop()


def _pool(db: Database[Any]) -> Any:
    return db.engine.sync_engine.pool  # type: ignore[union-attr]


async def _read(db: Database[CoreUnitOfWork]) -> None:
    async with db.uow() as uow:
        await uow.session.execute(PID, {})


async def _write(db: Database[CoreUnitOfWork]) -> None:
    async with db.uow() as uow:
        await uow.session.execute(_BUMP, {"key": "k"})
        await uow.commit()


# Per unit of work, by package: (SQLAlchemy, asyncpg, the platform) before round 16 and the
# pins now. A read: one plain read, no BEGIN; a write: BEGIN, one statement, COMMIT.
_BEFORE = {"read": (31, 18, 18), "write": (35, 45, 25)}
_PINNED = {"read": (3, 1, 19), "write": (3, 1, 28)}  # now 2, 0, 17 and 2, 0, 25


@pytest.mark.parametrize("kind", ["read", "write"])
async def test_a_unit_of_works_python_by_package(db, kind: str) -> None:
    run = _read if kind == "read" else _write
    await run(db)
    with entered_by_package(*_PACKAGES) as seen:
        for _ in range(10):
            await run(db)
    per_uow = {package: seen[package] / 10 for package in _PACKAGES}
    before = dict(zip(_PACKAGES, _BEFORE[kind], strict=True))
    for package, pinned in zip(_PACKAGES, _PINNED[kind], strict=True):
        assert per_uow[package] <= pinned, (package, per_uow, "before round 16:", before)


async def test_the_round_trips_are_those_asyncpg_would_send(db, round_trips: RoundTrips) -> None:
    with round_trips:
        await _write(db)
        await _read(db)
        async with db.uow() as uow:  # not committed: its ROLLBACK
            await uow.session.execute(_BUMP, {"key": "k"})
    assert round_trips.transaction_control == ["BEGIN;", "COMMIT;", "BEGIN;", "ROLLBACK;"]
    # BEGIN, the write, COMMIT; the read alone; BEGIN, the write, ROLLBACK.
    kinds = [kind for kind, _ in round_trips.sent]
    assert kinds == ["simple", "statement", "simple", "statement", "simple", "statement", "simple"]


async def test_a_transaction_open_on_the_server_is_never_joined(
    db, round_trips: RoundTrips
) -> None:
    """A transaction open on the server that the adapter does not know of (begun past it): the
    hot statement's BEGIN is refused as asyncpg refuses it, never sent into that transaction
    (PostgreSQL would only warn, and the statement would join work that is not its own)."""
    key = f"j-{uuid.uuid4()}"
    async with db.uow() as uow:
        await uow.session.execute(_PUT, {"id": key, "n": 1})
        await uow.commit()
    async with db.uow() as uow:
        adapted = await dbapi_connection(uow.session)
        with round_trips:
            await adapted._connection.execute("BEGIN")  # (not the adapter's: no _transaction)
            with pytest.raises(sa_exc.InterfaceError, match="manually started transaction"):
                await uow.session.execute(_BUMP, {"key": key})
        assert round_trips.transaction_control == ["BEGIN"]  # the foreign one only
        assert round_trips.statements == []
        await adapted._connection.execute("ROLLBACK")
    assert _pool(db).checkedout() == 0
    async with db.uow() as uow:
        assert (await uow.session.execute(IN_TRANSACTION, {})).scalar_one() is False
        assert (await uow.session.execute(_BUMP, {"key": key})).scalar_one() == 2


async def test_a_commit_that_fails_ends_the_transaction_and_the_connection_is_clean(db) -> None:
    key = f"d-{uuid.uuid4()}"
    session: CoreSession | None = None
    with pytest.raises(sa_exc.IntegrityError):
        async with db.uow() as uow:
            session = uow.session  # type: ignore[assignment]
            await uow.session.execute(_ADD, {"id": _id(), "key": key})
            await uow.session.execute(_ADD, {"id": _id(), "key": key})
            adapted = await dbapi_connection(uow.session)
            assert isinstance(adapted._transaction, _Begun)  # begun by the protocol itself
            await uow.commit()  # the deferred unique key is checked here, and refused
    assert session is not None and session._pooled is None
    assert _pool(db).checkedout() == 0
    async with db.uow() as uow:
        assert (await uow.session.execute(IN_TRANSACTION, {})).scalar_one() is False
        await uow.session.execute(_ADD, {"id": _id(), "key": key})  # nothing of it stayed
        await uow.commit()


async def test_the_inline_checkout_leaves_the_pool_as_its_own_checkout_does(db) -> None:
    ours = _checkout_now(_pool(db))
    assert ours is not None and _pool(db).checkedout() == 1
    fairy: Any = ours
    record: _ConnectionRecord = fairy._connection_record
    assert record.fairy_ref is not None and record.fairy_ref() is fairy and record.in_use
    assert fairy._counter == 1 and not fairy._echo
    assert _checkin_now(ours) is True
    assert _pool(db).checkedout() == 0 and record.fairy_ref is None
    assert not fairy._finalizer.alive  # (given back: nothing left to run if it is lost)
    theirs: Any = _pool(db).connect()  # the pool's own checkout, for comparison
    try:
        assert set(vars(theirs)) == set(vars(fairy))
        assert theirs._counter == fairy._counter + 1  # (ours was given back: 0)
    finally:
        theirs.close()


async def test_a_lost_connection_is_given_back_by_its_finalizer(db) -> None:
    """A fairy lost without close (its unit of work never ended) is found by the finalizer
    SQLAlchemy's checkout gives it: the connection is not leaked, and never handed out as
    if nothing had happened (the pool terminates what it cannot reset without awaiting)."""
    pid = await _pid(db)
    lost = _checkout_now(_pool(db))
    assert lost is not None and _pool(db).checkedout() == 1
    with pytest.warns(sa_exc.SAWarning, match="garbage collector"):  # (SQLAlchemy's finalizer)
        del lost
        gc.collect()
    assert _pool(db).checkedout() == 0
    assert await _pid(db) != pid


async def _pid(db: Database[CoreUnitOfWork]) -> int:
    async with db.uow() as uow:
        return (await uow.session.execute(PID, {})).scalar_one()  # type: ignore[no-any-return]


async def test_a_pool_that_logs_its_checkouts_goes_its_own_way(
    db, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("DEBUG", logger="sqlalchemy.pool"):
        await _write(db)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("sqlalchemy.pool")]
    assert any("checked out from pool" in m for m in messages), messages
    assert any("being returned to pool" in m for m in messages), messages
    assert _pool(db).checkedout() == 0
