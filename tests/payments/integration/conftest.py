"""Fixtures shared by the payments service's PostgreSQL tests: a fresh database per module (filled
by the module's `fill_database(connection)` first, where it has one), its engine and its session
factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hirepay_dev.pg import libpq_url
from hirepay_platform.db import create_engine, make_session_factory
from tests.support.pg_round_trips import round_trips  # noqa: F401 (a fixture, counted round trips)


@pytest.fixture(scope="module")
async def database_url(
    make_service_database: Callable[[str], str], request: pytest.FixtureRequest
) -> str:
    url = await asyncio.to_thread(make_service_database, "payments")
    fill = getattr(request.module, "fill_database", None)
    if fill is not None:
        connection = await asyncpg.connect(libpq_url(url))
        try:
            await fill(connection)
        finally:
            await connection.close()
    return url


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_session_factory(engine)
