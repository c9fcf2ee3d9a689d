"""The platform unit of work on real PostgreSQL: commit/rollback and the one storage-error mapping."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from hirepay_platform.db import Database, SqlAlchemyUnitOfWork, create_engine, make_session_factory
from hirepay_platform.errors import Conflict, Unavailable


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


async def test_rolls_back_unless_committed(db_url: str) -> None:
    db = Database(db_url, SqlAlchemyUnitOfWork, probe_table="items")
    await db.start()
    try:
        before = await _count(db)
        async with db.uow() as uow:
            await uow.session.execute(text("UPDATE items SET n = n + 1 WHERE id = 1"))
        assert await _count(db) == before
        async with db.uow() as uow:
            await uow.session.execute(text("UPDATE items SET n = n + 1 WHERE id = 1"))
            await uow.commit()
        assert await _count(db) == before + 1
    finally:
        await db.stop()


async def test_lost_race_is_conflict(db_url: str) -> None:
    db = Database(db_url, SqlAlchemyUnitOfWork, probe_table="items")
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
