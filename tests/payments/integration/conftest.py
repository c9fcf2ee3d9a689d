"""Fixtures shared by the payments service's PostgreSQL tests: a fresh database per module, its
engine and its session factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hirepay_platform.db import create_engine, make_session_factory
from tests.support.pg_round_trips import round_trips  # noqa: F401 (a fixture, counted round trips)


@pytest.fixture(scope="module")
def database_url(make_service_database: Callable[[str], str]) -> str:
    return make_service_database("payments")


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_session_factory(engine)
