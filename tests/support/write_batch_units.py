"""Units of work for the write batch's PostgreSQL tests (hirepay_platform.write_batch): its
statements run hot on a CoreSession, as the services' units of work run them, or each through
SQLAlchemy on an ORM session; `started` opens a database with either."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from hirepay_platform.db import Database, SqlAlchemyUnitOfWork
from hirepay_platform.write_batch import BatchedSession


class CoreUnitOfWork(SqlAlchemyUnitOfWork):
    """Hot statements on a CoreSession, as the services' units of work."""

    core_only = True

    def _attach(self, session: Any) -> None:
        self.batched = BatchedSession(session)
        self.batch = self.batched.batch

    async def commit(self) -> None:
        await self.batch.flush()
        await super().commit()


class OrmUnitOfWork(CoreUnitOfWork):
    """The same through an ORM session: SQLAlchemy runs every statement."""

    core_only = False


# A test's parameter ("hot" or "sqlalchemy") -> its unit of work.
UNITS = {"hot": CoreUnitOfWork, "sqlalchemy": OrmUnitOfWork}


@asynccontextmanager
async def started(url: str, way: str, probe_table: str) -> AsyncIterator[Database[Any]]:
    """The database at `url` with the units of work of `way` (UNITS), started and stopped."""
    database = Database(url, UNITS[way], probe_table=probe_table, pool_size=2)
    await database.start()
    try:
        yield database
    finally:
        await database.stop()
