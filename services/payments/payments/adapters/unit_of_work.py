"""The PostgreSQL unit of work: one session (one local transaction) with every repository on it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hirepay_platform.clock import utc_now
from hirepay_platform.db import SqlAlchemyUnitOfWork
from payments.adapters.repositories import (
    SqlAuditRepository,
    SqlBarrierRepository,
    SqlEventRepository,
    SqlOutboxRepository,
    SqlPaymentRepository,
    SqlRefundRepository,
    SqlTransactionRepository,
)


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

    def _attach(self, session: AsyncSession) -> None:
        self.payments = SqlPaymentRepository(session)
        self.barriers = SqlBarrierRepository(session)
        self.refunds = SqlRefundRepository(session)
        self.transactions = SqlTransactionRepository(session)
        self.events = SqlEventRepository(session)
        self.outbox = SqlOutboxRepository(session)
        self.audit = SqlAuditRepository(session)
