"""The wallet's unit of work on PostgreSQL: one session, one local transaction, four repositories."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hirepay_platform.clock import utc_now
from hirepay_platform.db import SqlAlchemyUnitOfWork
from wallet.adapters.repositories import (
    SqlAccountRepository,
    SqlBarrierRepository,
    SqlHoldRepository,
    SqlLedgerRepository,
)


class SqlWalletUnitOfWork(SqlAlchemyUnitOfWork):
    """The ledger's repositories on one session (storage errors are mapped by the base class)."""

    accounts: SqlAccountRepository
    ledger: SqlLedgerRepository
    holds: SqlHoldRepository
    barriers: SqlBarrierRepository

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__(session_factory)
        self.clock = clock

    def _attach(self, session: AsyncSession) -> None:
        self.accounts = SqlAccountRepository(session)
        self.ledger = SqlLedgerRepository(session)
        self.holds = SqlHoldRepository(session)
        self.barriers = SqlBarrierRepository(session)
