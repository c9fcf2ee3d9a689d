"""The PostgreSQL unit of work: one connection (one local transaction) with every repository on it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Executable
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

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


class CoreSession:
    """What a unit of work asks of its session, on one Core connection of the engine's pool.

    Payments' repositories run Core statements only (tables, no mapped classes), so an ORM
    session did nothing for them but cost its unit-of-work machinery (session and transaction
    state, identity map, flush events) around every statement: about 115 Python calls per unit
    of work, a few per posting (issue 13). The transaction is the connection's, exactly as the
    session's was: it begins with the first statement that needs one (see the platform's
    _LazyBeginCursor), `commit()` commits it, `rollback()` or `close()` without a commit rolls it
    back, and the connection goes back to the pool on `close()`."""

    __slots__ = ("_connection", "_engine")

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection: AsyncConnection | None = None

    async def connection(
        self, execution_options: Mapping[str, Any] | None = None
    ) -> AsyncConnection:
        """The unit of work's connection, taken from the pool on first use; `execution_options`
        (e.g. an isolation level) apply to it, refused once its transaction has begun."""
        connection = self._connection
        if connection is None:
            connection = self._connection = await self._engine.connect()
        if execution_options:
            await connection.execution_options(**execution_options)
        return connection

    async def execute(self, statement: Executable, params: Any = None, **kw: Any) -> Result[Any]:
        connection = self._connection or await self.connection()
        return await connection.execute(statement, params, **kw)

    async def scalar(self, statement: Executable, params: Any = None, **kw: Any) -> Any:
        connection = self._connection or await self.connection()
        return await connection.scalar(statement, params, **kw)

    async def scalars(self, statement: Executable, params: Any = None, **kw: Any) -> Any:
        connection = self._connection or await self.connection()
        return await connection.scalars(statement, params, **kw)

    async def commit(self) -> None:
        if self._connection is not None:
            await self._connection.commit()

    async def rollback(self) -> None:
        if self._connection is not None:
            await self._connection.rollback()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()


def core_sessions(session_factory: async_sessionmaker[AsyncSession]) -> Callable[[], CoreSession]:
    """Sessions on the engine `session_factory` is bound to (its connections, its pool)."""
    engine: AsyncEngine = session_factory.kw["bind"]
    return lambda: CoreSession(engine)


class SqlPaymentsUnitOfWork(SqlAlchemyUnitOfWork):
    """`async with uow:` opens a session; rolls back unless `await uow.commit()`."""

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
        # Core connections, not ORM sessions (CoreSession); the platform's unit of work only
        # calls the factory and the session's execute, connection, commit, rollback and close.
        super().__init__(core_sessions(session_factory))  # type: ignore[arg-type]
        # Woken after a commit that wrote settlement events (the stream's followers wait on it).
        self._published = published

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
        if self._published is not None and self.outbox.written:
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
        self.payments = SqlPaymentRepository(batched)
        self.barriers = SqlBarrierRepository(batched, tables.tcc_barriers)
        self.refunds = SqlRefundRepository(batched)
        self.transactions = SqlTransactionRepository(batched)
        self.events = SqlEventRepository(batched)
        self.outbox = SqlOutboxRepository(batched)
        self.audit = SqlAuditRepository(batched)
        self.credit_grants = SqlCreditGrantRepository(batched)
        self.payouts = SqlPayoutRepository(batched)
