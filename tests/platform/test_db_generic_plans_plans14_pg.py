"""The request path's units of work plan generically, the rest keep PostgreSQL's default plans
(issue 13, round 14), on real PostgreSQL: a Database with `generic_plan_requests` hands out
`request_uow()`s whose connections run with `plan_cache_mode=force_generic_plan` (sent in the
connection's start-up packet) and `uow()`s whose connections do not; a statement run six times on
a fresh request connection takes its one generic plan each time (no custom plan), and five times for its values on a
default one before its generic plan. Without the flag both are the one default engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text, bindparam, select, text

from hirepay_platform.db import Database, HotStatement, SqlAlchemyUnitOfWork
from tests.support.plan_cache import plan_cache_mode

metadata = MetaData()
items = Table(
    "plans_items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False),
)
# A request path's key probe, run hot (straight on the pooled asyncpg connection).
_BY_ID = HotStatement(select(items.c.name).where(items.c.id == bindparam("id")))


class CoreUnitOfWork(SqlAlchemyUnitOfWork):
    core_only = True


async def _database(url: str, **kw: Any) -> Database[CoreUnitOfWork]:
    # One connection per engine: each unit of work below runs on the same backend as the last.
    database = Database(url, CoreUnitOfWork, probe_table="pg_class", pool_size=1, **kw)
    await database.start()
    assert database.engine is not None
    async with database.engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
        await connection.execute(items.insert(), [{"id": i, "name": f"n{i}"} for i in range(50)])
    return database


@pytest.fixture
async def generic(make_database) -> AsyncIterator[Database[CoreUnitOfWork]]:
    database = await _database(make_database("plans_generic"), generic_plan_requests=True)
    yield database
    await database.stop()


async def _plans_after_six_runs(make_uow: Any) -> tuple[int, int]:
    """How many of the probe's six runs on the unit of work's connection took its generic plan
    (made once and kept) and how many a custom plan (planned for that run's values)."""
    for i in range(6):
        async with make_uow() as uow:
            assert await uow.session.scalar(_BY_ID, {"id": i}) == f"n{i}"
    async with make_uow() as uow:
        row = (
            await uow.session.execute(
                text(
                    "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                    " WHERE statement LIKE 'SELECT plans_items.name %'"
                )
            )
        ).one()
    return int(row.generic_plans), int(row.custom_plans)


async def test_request_units_of_work_plan_generically_the_others_do_not(generic) -> None:
    assert await plan_cache_mode(generic.request_uow()) == "force_generic_plan"
    assert await plan_cache_mode(generic.uow()) == "auto"
    assert generic.request_engine is not generic.engine


async def test_a_request_connection_plans_a_statement_once(generic) -> None:
    # The request path's connection: the one generic plan for every run, nothing planned again.
    assert await _plans_after_six_runs(generic.request_uow) == (6, 0)
    # The default connection: five custom plans (a planning per run) before the generic one.
    assert await _plans_after_six_runs(generic.uow) == (1, 5)


async def test_without_the_flag_requests_use_the_default_engine(make_database) -> None:
    database = await _database(make_database("plans_default"))
    try:
        assert database.request_engine is database.engine
        assert await plan_cache_mode(database.request_uow()) == "auto"
    finally:
        await database.stop()
