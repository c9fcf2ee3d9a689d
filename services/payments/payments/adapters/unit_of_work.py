"""The PostgreSQL unit of work: one session (one local transaction) with every repository on it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hirepay_platform.db import SqlAlchemyUnitOfWork
from hirepay_platform.errors import Unavailable
from payments.adapters.repositories import (
    SqlAuditRepository,
    SqlBarrierRepository,
    SqlEventRepository,
    SqlOutboxRepository,
    SqlPaymentRepository,
    SqlRefundRepository,
    SqlTransactionRepository,
)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _database_down(error: BaseException | None) -> bool:
    """Whether a storage error means the database cannot be reached (transient), rather than a
    refused statement (a bug or a constraint, which must surface as it is)."""
    if isinstance(error, sa_exc.TimeoutError | sa_exc.OperationalError | sa_exc.InterfaceError):
        return True
    if isinstance(error, sa_exc.DBAPIError):
        return bool(error.connection_invalidated) or "shutting down" in str(error.orig)
    return isinstance(error, ConnectionError | OSError)


class SqlPaymentsUnitOfWork(SqlAlchemyUnitOfWork):
    """`async with uow:` opens a session; rolls back unless `await uow.commit()`."""

    payments: SqlPaymentRepository
    barriers: SqlBarrierRepository
    refunds: SqlRefundRepository
    transactions: SqlTransactionRepository
    events: SqlEventRepository
    outbox: SqlOutboxRepository
    audit: SqlAuditRepository

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__(session_factory)
        self.clock = clock

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not _database_down(exc):
            await super().__aexit__(exc_type, exc, tb)
            return
        with contextlib.suppress(Exception):  # the rollback fails too when the server is gone
            await super().__aexit__(exc_type, exc, tb)
        # storage error -> domain error: retryable UNAVAILABLE instead of INTERNAL
        raise Unavailable(
            "the payments database is unavailable; retry", reason="DATABASE_UNAVAILABLE"
        ) from exc

    def _attach(self, session: AsyncSession) -> None:
        self.payments = SqlPaymentRepository(session)
        self.barriers = SqlBarrierRepository(session)
        self.refunds = SqlRefundRepository(session)
        self.transactions = SqlTransactionRepository(session)
        self.events = SqlEventRepository(session)
        self.outbox = SqlOutboxRepository(session)
        self.audit = SqlAuditRepository(session)
