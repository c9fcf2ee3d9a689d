"""The jobs unit of work over PostgreSQL: one local transaction with the jobs repositories."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hirepay_platform.clock import utc_now
from hirepay_platform.db import SqlAlchemyUnitOfWork
from jobs.adapters.repository import (
    SqlJobRepository,
    SqlSagaRepository,
    SqlSettlementRepository,
)


class SqlJobsUnitOfWork(SqlAlchemyUnitOfWork):
    """`async with uow:` opens a transaction; it rolls back unless `await uow.commit()`."""

    jobs: SqlJobRepository
    sagas: SqlSagaRepository
    settlements: SqlSettlementRepository

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__(session_factory)
        self.clock = clock

    def _attach(self, session: AsyncSession) -> None:
        self.jobs = SqlJobRepository(session)
        self.sagas = SqlSagaRepository(session)
        self.settlements = SqlSettlementRepository(session)
