"""The PostgreSQL unit of work: one connection (one local transaction) with every repository on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hirepay_platform.barrier import SqlBarrierRepository
from hirepay_platform.db import SqlAlchemyUnitOfWork
from hirepay_platform.write_batch import BatchedSession
from payments.adapters import tables
from payments.adapters.credit_repository import SqlCreditGrantRepository
from payments.adapters.event_repositories import SqlEventRepository, SqlOutboxRepository
from payments.adapters.payout_repository import SqlPayoutRepository
from payments.adapters.repositories import (
    SqlAuditRepository,
    SqlPaymentRepository,
    SqlRefundRepository,
)
from payments.adapters.transaction_repository import SqlTransactionRepository
from payments.service_layer.wakeup import Wakeup

# The repositories a unit of work makes on first use in each transaction (its __getattr__): a
# posting's ~9.5 units of work each made all nine, most never used. Made on first use, each is
# then a plain attribute of the unit of work for the rest of the transaction (no call to reach
# it, as before), and forgotten when the next transaction attaches (issue 13).
_MADE_ON_FIRST_USE: dict[str, Callable[[Any], Any]] = {
    "barriers": lambda batched: SqlBarrierRepository(batched, tables.tcc_barriers),
    "refunds": SqlRefundRepository,
    "transactions": SqlTransactionRepository,
    "events": SqlEventRepository,
    "outbox": SqlOutboxRepository,
    "audit": SqlAuditRepository,
    "credit_grants": SqlCreditGrantRepository,
    "payouts": SqlPayoutRepository,
}


class SqlPaymentsUnitOfWork(SqlAlchemyUnitOfWork):
    """`async with uow:` opens a session; rolls back unless `await uow.commit()`."""

    # Its repositories run Core statements only: one Core connection, not an ORM session.
    core_only = True

    payments: SqlPaymentRepository
    barriers: SqlBarrierRepository
    refunds: SqlRefundRepository
    transactions: SqlTransactionRepository
    events: SqlEventRepository
    outbox: SqlOutboxRepository
    audit: SqlAuditRepository
    credit_grants: SqlCreditGrantRepository
    payouts: SqlPayoutRepository

    def __init__(
        self, session_factory: async_sessionmaker[AsyncSession], *, published: Wakeup | None = None
    ) -> None:
        super().__init__(session_factory)
        # Woken after a commit that wrote settlement events (the stream's followers wait on it).
        self._published = published
        self._made: list[str] = []  # this transaction's repositories made on first use

    async def autocommit(self) -> None:
        """Make each statement of this unit of work a transaction of its own, committed when it
        returns (durable like any commit): for a unit of work that writes with one statement,
        it saves the BEGIN and COMMIT round trips (issue 13). Call it first; `commit()` then
        has nothing left to do."""
        await self.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})

    async def commit(self) -> None:
        if self._batch.guarded:  # one statement alone, or StaleRow (payments.assume, barriers)
            await self._batch.flush_guarded()
        else:
            await self._batch.flush()
        await super().commit()
        # An outbox this transaction never used wrote nothing (and is not made to say so).
        if self._published is not None and "outbox" in self.__dict__ and self.outbox.written:
            self._published.notify()
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
        self._batched = batched
        self.payments = SqlPaymentRepository(batched)
        if self._made:  # the last transaction's, bound to its session: the next use makes new
            state = self.__dict__
            for name in self._made:
                del state[name]
            self._made = []

    if not TYPE_CHECKING:  # the attributes keep their declared types; no other name is made

        def __getattr__(self, name: str) -> Any:
            """A repository of _MADE_ON_FIRST_USE not yet used in this transaction: made, and
            kept as an attribute until the next transaction."""
            try:
                make = _MADE_ON_FIRST_USE[name]
            except KeyError:
                raise AttributeError(name) from None
            repository = self.__dict__[name] = make(self._batched)
            self._made.append(name)
            return repository
