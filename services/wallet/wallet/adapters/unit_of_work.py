"""The wallet's unit of work on PostgreSQL: one session, one local transaction, four repositories."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from types import TracebackType

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hirepay_platform.db import SqlAlchemyUnitOfWork
from hirepay_platform.errors import Conflict, Unavailable
from wallet.adapters.repositories import (
    SqlAccountRepository,
    SqlBarrierRepository,
    SqlHoldRepository,
    SqlLedgerRepository,
)
from wallet.service_layer.unit_of_work import utc_now

# SQLSTATEs of a lost race: deadlock detected, serialization failure, lock not available.
_RACE_STATES = frozenset({"40P01", "40001", "55P03"})


def _sqlstate(error: BaseException) -> str | None:
    for candidate in (getattr(error, "orig", None), error.__cause__, error):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


class SqlWalletUnitOfWork(SqlAlchemyUnitOfWork):
    """Also maps storage failures to domain errors: a lost race is CONFLICT (retry), a database
    that cannot be reached or has no free connection is UNAVAILABLE."""

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

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await super().__aexit__(exc_type, exc, tb)
        if isinstance(exc, sa_exc.DBAPIError) and _sqlstate(exc) in _RACE_STATES:
            raise Conflict("a concurrent transaction touched the same rows; retry") from exc
        if isinstance(exc, sa_exc.TimeoutError | sa_exc.InterfaceError | OSError):
            raise Unavailable("the wallet database is unavailable; retry") from exc
