"""The PostgreSQL unit of work: one connection (one local transaction) with every repository on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hirepay_platform.barrier import SqlBarrierRepository
from hirepay_platform.db import SqlAlchemyUnitOfWork, autocommit
from hirepay_platform.write_batch import BatchedSession
from payments.adapters import tables
from payments.adapters.credit_repository import SqlCreditGrantRepository
from payments.adapters.dispute_repository import SqlDisputeRepository
from payments.adapters.event_repositories import SqlEventRepository, SqlOutboxRepository
from payments.adapters.payout_repository import SqlPayoutRepository
from payments.adapters.reconciliation_repository import SqlReconciliationRepository
from payments.adapters.repositories import (
    SqlAuditRepository,
    SqlPaymentRepository,
    SqlRefundRepository,
)
from payments.adapters.transaction_repository import SqlTransactionRepository
from payments.service_layer.wakeup import Wakeup


class SqlPaymentsUnitOfWork(SqlAlchemyUnitOfWork):
    """`async with uow:` opens a session; rolls back unless `await uow.commit()`."""

    # Its repositories run Core statements only: one Core connection, not an ORM session.
    core_only = True
    # Made on first use in each transaction (SqlAlchemyUnitOfWork): a posting's ~9.5 units of
    # work each made all nine, most never used (issue 13).
    made_on_first_use = {
        "barriers": lambda uow: SqlBarrierRepository(uow.batched, tables.tcc_barriers),
        "refunds": lambda uow: SqlRefundRepository(uow.batched),
        "transactions": lambda uow: SqlTransactionRepository(uow.batched),
        "events": lambda uow: SqlEventRepository(uow.batched),
        "outbox": lambda uow: SqlOutboxRepository(uow.batched),
        "audit": lambda uow: SqlAuditRepository(uow.batched),
        "credit_grants": lambda uow: SqlCreditGrantRepository(uow.batched),
        "payouts": lambda uow: SqlPayoutRepository(uow.batched),
        "reconciliations": lambda uow: SqlReconciliationRepository(uow.batched),
        "disputes": lambda uow: SqlDisputeRepository(uow.batched),
    }

    payments: SqlPaymentRepository
    barriers: SqlBarrierRepository
    refunds: SqlRefundRepository
    transactions: SqlTransactionRepository
    events: SqlEventRepository
    outbox: SqlOutboxRepository
    audit: SqlAuditRepository
    credit_grants: SqlCreditGrantRepository
    payouts: SqlPayoutRepository
    reconciliations: SqlReconciliationRepository
    disputes: SqlDisputeRepository

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        published: Wakeup | None = None,
        owed: Wakeup | None = None,
    ) -> None:
        super().__init__(session_factory)
        # Woken after a commit that wrote settlement events (the stream's followers wait on it).
        self._published = published
        # Woken after a commit that recorded a ledger booking (the booking worker waits on it).
        self._owed = owed

    async def autocommit(self) -> None:
        """Make each statement of this unit of work a transaction of its own, committed when it
        returns (durable like any commit): for a unit of work that writes with one statement,
        it saves the BEGIN and COMMIT round trips (issue 13). Call it first; `commit()` then
        has nothing left to do. Hot statements then run on the pooled connection without
        SQLAlchemy's Connection (db.autocommit)."""
        await autocommit(self.session)

    async def commit(self) -> None:
        if self._batch.guarded:  # one statement alone, or StaleRow (payments.assume, barriers)
            await self._batch.flush_guarded()
        else:
            await self._batch.flush()
        await super().commit()
        # An outbox this transaction never used wrote nothing (and is not made to say so).
        if self._published is not None and self.made("outbox") and self.outbox.written:
            self._published.notify()
        if self._owed is not None and self.made("credit_grants") and self.credit_grants.written:
            self._owed.notify()
        actions, self._after_commit = self._after_commit, []
        for action in actions:
            action()

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run `action` once this unit of work has committed (metrics of what it wrote: a unit of
        work that is redone, e.g. after StaleRow, counts once)."""
        self._after_commit.append(action)

    def _attach(self, session: Any) -> None:
        # Audit entries, outbox events and payment rows are held back and sent together before
        # the next statement or the commit (hirepay_platform/write_batch.py).
        batched: Any = BatchedSession(session)
        self._batch = batched.batch
        self._after_commit: list[Callable[[], None]] = []
        self.batched = batched  # what the repositories made on first use are given
        self.payments = SqlPaymentRepository(batched)
