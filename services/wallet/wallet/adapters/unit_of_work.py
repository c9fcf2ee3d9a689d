"""The wallet's unit of work on PostgreSQL: one session, one local transaction, its repositories."""

from __future__ import annotations

from typing import Any

from hirepay_platform.barrier import SqlBarrierRepository
from hirepay_platform.db import SqlAlchemyUnitOfWork
from wallet.adapters.repositories import (
    SqlAccountRepository,
    SqlHoldRepository,
    SqlLedgerRepository,
)
from wallet.adapters.repositories.audit import SqlLedgerAuditRepository
from wallet.adapters.repositories.reports import SqlLedgerReadRepository
from wallet.adapters.tables import tcc_barriers


class SqlWalletUnitOfWork(SqlAlchemyUnitOfWork):
    """The ledger's repositories on one session (storage errors are mapped by the base class)."""

    # Its repositories run Core statements only: one Core connection, not an ORM session.
    core_only = True

    accounts: SqlAccountRepository
    ledger: SqlLedgerRepository
    holds: SqlHoldRepository
    barriers: SqlBarrierRepository
    audit: SqlLedgerAuditRepository
    reports: SqlLedgerReadRepository

    def _attach(self, session: Any) -> None:
        self.accounts = SqlAccountRepository(session)
        self.ledger = SqlLedgerRepository(session)
        self.holds = SqlHoldRepository(session)
        self.barriers = SqlBarrierRepository(session, tcc_barriers)
        self.audit = SqlLedgerAuditRepository(session)
        self.reports = SqlLedgerReadRepository(session)
