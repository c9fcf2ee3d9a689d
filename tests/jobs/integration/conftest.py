"""Fixtures shared by the jobs service's PostgreSQL tests: a fresh jobs database per test and
SQLAlchemy sessions on it, over a pool of `connections` (a module overrides that fixture where
its test counts on one connection or wants another pool), and counted round trips."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hirepay_platform.db import create_engine, make_session_factory
from tests.support.pg_round_trips import round_trips  # noqa: F401 (a fixture, counted round trips)


@pytest.fixture
def connections() -> tuple[int, int]:
    """The pool of `sessions`: its size and overflow (room for the concurrency tests' races)."""
    return 30, 10


@pytest.fixture
async def sessions(
    make_service_database: Callable[[str], str], connections: tuple[int, int]
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    url = await asyncio.to_thread(make_service_database, "jobs")
    pool_size, max_overflow = connections
    engine = create_engine(url, pool_size=pool_size, max_overflow=max_overflow)
    yield make_session_factory(engine)
    await engine.dispose()
