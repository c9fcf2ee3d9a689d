"""PostgreSQL repositories of the wallet, one module per seam; every SQL statement lives here.

Rows become domain objects through named `_..._from_row` functions; no row leaves these modules.
Repositories never commit (the unit of work does). The TCC barrier's repository is the platform's
`hirepay_platform.barrier.SqlBarrierRepository` on the wallet's `tcc_barriers` table.
"""

from wallet.adapters.repositories.accounts import (
    ACCOUNT_REFS,
    AccountRefCache,
    SqlAccountRepository,
)
from wallet.adapters.repositories.holds import SqlHoldRepository
from wallet.adapters.repositories.ledger import SqlLedgerRepository

__all__ = [
    "ACCOUNT_REFS",
    "AccountRefCache",
    "SqlAccountRepository",
    "SqlHoldRepository",
    "SqlLedgerRepository",
]
