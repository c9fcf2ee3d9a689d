"""The platform unit of work on real PostgreSQL: commit/rollback and the one storage-error mapping."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from hirepay_platform import db as platform_db
from hirepay_platform.db import (
    CoreSession,
    Database,
    SqlAlchemyUnitOfWork,
    create_engine,
    execute_alone,
    make_session_factory,
    plain_read,
)
from hirepay_platform.errors import Conflict, Unavailable
from hirepay_platform.settings import DEFAULT_MAX_OVERFLOW, DEFAULT_POOL_SIZE


@pytest.fixture(scope="module")
async def db_url(make_database) -> str:
    url = make_database("platform")
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL)"))
        await conn.execute(text("INSERT INTO items VALUES (1, 0)"))
    await engine.dispose()
    return url


async def _count(db: Database[SqlAlchemyUnitOfWork]) -> int:
    async with db.uow() as uow:
        return int(
            (await uow.session.execute(text("SELECT n FROM items WHERE id = 1"))).scalar_one()
        )


class CoreUnitOfWork(SqlAlchemyUnitOfWork):
    """A unit of work of a service whose repositories run Core statements only."""

    core_only = True


UNITS_OF_WORK = [SqlAlchemyUnitOfWork, CoreUnitOfWork]


@pytest.mark.parametrize("kind", UNITS_OF_WORK)
async def test_rolls_back_unless_committed(db_url: str, kind: type[SqlAlchemyUnitOfWork]) -> None:
    """The same transaction on an ORM session and on a Core connection (core_only, issue 13),
    and every connection back in the pool afterwards."""
    db = Database(db_url, kind, probe_table="items")
    await db.start()
    try:
        before = await _count(db)
        async with db.uow() as uow:
            assert isinstance(uow.session, CoreSession) is kind.core_only
            await uow.session.execute(text("UPDATE items SET n = n + 1 WHERE id = 1"))
        assert await _count(db) == before
        async with db.uow() as uow:
            await uow.session.execute(text("UPDATE items SET n = n + 1 WHERE id = 1"))
            await uow.commit()
        assert await _count(db) == before + 1
        async with db.uow() as uow:
            await uow.session.execute(text("UPDATE items SET n = n + 1 WHERE id = 1"))
            await uow.rollback()
        assert await _count(db) == before + 1
        assert db.engine is not None and db.engine.sync_engine.pool.checkedout() == 0
    finally:
        await db.stop()


class RecordingTracer:
    def __init__(self) -> None:
        self.spans: list[str] = []

    @contextlib.contextmanager
    def start_as_current_span(self, name: str, **kw: Any) -> Iterator[None]:
        self.spans.append(name)
        yield None


@pytest.mark.parametrize("exporting", [True, False])
async def test_a_commit_has_its_span_only_when_spans_are_exported(
    db_url: str, monkeypatch: pytest.MonkeyPatch, exporting: bool
) -> None:
    """The latency budget reads each hop's COMMIT from its span; a span that goes nowhere is
    skipped, and the commit happens either way (issue 13)."""
    tracer = RecordingTracer()
    monkeypatch.setattr(platform_db, "_TRACER", tracer)
    monkeypatch.setattr(platform_db.tracing, "exporting", lambda: exporting)
    db = Database(db_url, SqlAlchemyUnitOfWork, probe_table="items")
    await db.start()
    try:
        before = await _count(db)
        async with db.uow() as uow:
            await uow.session.execute(text("UPDATE items SET n = n + 1 WHERE id = 1"))
            await uow.commit()
        assert await _count(db) == before + 1
        assert tracer.spans == (["db.commit"] if exporting else [])
    finally:
        await db.stop()


@pytest.mark.parametrize("kind", UNITS_OF_WORK)
async def test_lost_race_is_conflict(db_url: str, kind: type[SqlAlchemyUnitOfWork]) -> None:
    db = Database(db_url, kind, probe_table="items")
    await db.start()
    try:
        async with db.uow() as holder:
            await holder.session.execute(text("SELECT * FROM items WHERE id = 1 FOR UPDATE"))
            with pytest.raises(Conflict) as caught:
                async with db.uow() as waiter:
                    await waiter.session.execute(text("SET LOCAL lock_timeout = '50ms'"))
                    await waiter.session.execute(text("UPDATE items SET n = n + 1 WHERE id = 1"))
            assert caught.value.reason == "CONFLICT"
    finally:
        await db.stop()


async def test_unreachable_database_is_unavailable_and_start_fails_fast() -> None:
    url = "postgresql://postgres@127.0.0.1:1/none"
    db = Database(url, SqlAlchemyUnitOfWork, probe_table="items")
    with pytest.raises(OSError):
        await db.start()  # a service must not report SERVING without its database
    await db.stop()
    with pytest.raises(Unavailable) as caught:
        async with SqlAlchemyUnitOfWork(make_session_factory(create_engine(url))) as uow:
            await uow.session.execute(text("SELECT 1"))
    assert caught.value.reason == "DATABASE_UNAVAILABLE"


async def _in_transaction(db: Database[SqlAlchemyUnitOfWork], pid: int) -> bool:
    """Whether backend `pid` has a transaction open (seen from another connection)."""
    assert db.engine is not None
    async with db.engine.connect() as other:
        started = await other.scalar(
            text("SELECT xact_start FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        )
        await other.rollback()
    return started is not None


async def test_plain_reads_go_before_begin_locks_and_writes_stay_transactional(
    db_url: str,
) -> None:
    """Issue 13: a read-only unit of work sends no BEGIN/ROLLBACK; the transaction opens at the
    first lock or write, which hold until commit or roll back as always."""
    db = Database(db_url, SqlAlchemyUnitOfWork, probe_table="items")
    await db.start()
    try:
        before = await _count(db)
        async with db.uow() as uow:
            pid = int((await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            await uow.session.execute(text("SELECT n FROM items WHERE id = 1"))
            assert not await _in_transaction(db, pid)
            await uow.session.execute(text("SELECT n FROM items WHERE id = 1 FOR UPDATE"))
            assert await _in_transaction(db, pid)
            with pytest.raises(Conflict):
                async with db.uow() as waiter:
                    await waiter.session.execute(text("SET LOCAL lock_timeout = '50ms'"))
                    await waiter.session.execute(text("UPDATE items SET n = n + 1 WHERE id = 1"))
            await uow.session.execute(text("UPDATE items SET n = n + 1 WHERE id = 1"))
        assert await _count(db) == before  # rolled back: never committed
    finally:
        await db.stop()


async def test_a_statement_alone_commits_itself_and_leaves_no_transaction_open(
    db_url: str,
) -> None:
    """Issue 13: execute_alone runs one statement as its own transaction (no BEGIN, no COMMIT of
    the unit of work): its change stays even though the unit of work then rolls back, and the
    session's next write opens a transaction as usual (rolled back here). After a lock or a write
    it refuses (the statement would silently leave the open transaction)."""
    db = Database(db_url, SqlAlchemyUnitOfWork, probe_table="items")
    await db.start()
    try:
        before = await _count(db)
        async with db.uow() as uow:
            pid = int((await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            changed = await execute_alone(
                uow.session, text("UPDATE items SET n = n + :k WHERE id = 1 RETURNING n"), {"k": 5}
            )
            assert changed.scalar_one() == before + 5
            assert not await _in_transaction(db, pid)
            assert await _count(db) == before + 5  # committed: seen from another connection
            await uow.session.execute(text("UPDATE items SET n = n + 1 WHERE id = 1"))
            assert await _in_transaction(db, pid)
            with pytest.raises(RuntimeError):
                await execute_alone(uow.session, text("UPDATE items SET n = 0"), {})
        assert await _count(db) == before + 5  # the unit of work's own write rolled back
    finally:
        await db.stop()


def test_what_counts_as_a_plain_read() -> None:
    assert plain_read("SELECT sagas.id FROM sagas WHERE sagas.id = $1")
    assert plain_read("  select count(*) from jobs")
    for sql in (
        "SELECT * FROM sagas WHERE id = $1 FOR UPDATE",
        "SELECT * FROM jobs FOR NO KEY UPDATE SKIP LOCKED",
        "SELECT * FROM jobs FOR SHARE",
        "SELECT pg_advisory_xact_lock($1)",
        "SELECT set_config('x', 'y', true)",
        "SELECT nextval('s')",
        "SELECT now()",
        "SELECT CURRENT_TIMESTAMP",
        "UPDATE items SET n = 1",
        "WITH x AS (DELETE FROM items RETURNING *) SELECT * FROM x",
        "INSERT INTO items SELECT 1, 2",
    ):
        assert not plain_read(sql), sql


async def test_the_default_pool_keeps_every_connection_it_may_open(db_url: str) -> None:
    """Two bursts of as many concurrent statements as the platform's default pool allows are
    served by the same PostgreSQL backends: no connection is closed and opened again between them
    (overflow connections are closed on return, so with an overflow every burst above the pool
    pays for new backends: issue 13)."""
    engine = create_engine(db_url)
    try:

        async def backend() -> int:
            async with engine.connect() as conn:
                pid = (await conn.execute(text("SELECT pg_backend_pid(), pg_sleep(0.05)"))).first()
                return int(pid[0]) if pid else 0

        async def burst() -> set[int]:
            return set(await asyncio.gather(*(backend() for _ in range(cap))))

        cap = DEFAULT_POOL_SIZE + DEFAULT_MAX_OVERFLOW
        assert cap >= 32  # a replica serves 32 postings at once (the bench's c=32)
        first = await burst()
        second = await burst()
        assert len(first) == cap
        assert second <= first
    finally:
        await engine.dispose()


class _Repository:
    def __init__(self, session: Any, made: list[str]) -> None:
        self.session = session
        made.append(type(self).__name__)


class _LazyUnitOfWork(SqlAlchemyUnitOfWork):
    """Two repositories made on first use, one always (the way services declare them)."""

    core_only = True
    made_on_first_use = {
        "rare": lambda uow: _Repository(uow.session, uow.log),
        "other": lambda uow: _Repository(uow.session, uow.log),
    }
    rare: _Repository
    other: _Repository

    def _attach(self, session: Any) -> None:
        self.always = _Repository(session, self.log)


async def test_repositories_named_made_on_first_use_are_made_once_per_transaction() -> None:
    # Nothing connects: a unit of work takes its connection with its first statement only.
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:9/none")
    uow = _LazyUnitOfWork(make_session_factory(engine))
    uow.log = []
    try:
        async with uow:
            assert uow.log == ["_Repository"] and not uow.made("rare")  # only `always`
            first = uow.rare
            assert uow.made("rare") and not uow.made("other")
            assert uow.rare is first and first.session is uow.session  # one per transaction
            assert len(uow.log) == 2
            with pytest.raises(AttributeError):
                _ = uow.no_such_repository
        async with uow:
            assert not uow.made("rare")  # forgotten: the next use makes one on the new session
            assert uow.rare is not first and uow.rare.session is uow.session
    finally:
        await engine.dispose()
