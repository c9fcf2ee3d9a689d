"""Read-only SQL of the ledger audit: the invariants the write path guarantees, checked again over
the stored rows (an unbalanced transfer, a balance past its limit, an expired hold still pending)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from wallet.domain.audit import FindingKind, LedgerFinding

_UNBALANCED = text(
    """
    SELECT transfer_id, unit, sum(amount) AS total
      FROM entries
     GROUP BY transfer_id, unit
    HAVING sum(amount) <> 0
     ORDER BY transfer_id
     LIMIT :limit
    """
)
# An account that may not go negative, whose balance (its shards included) is negative, or whose
# holds exceed it.
_BREACHES = text(
    """
    SELECT CAST(id AS text) AS id, unit, posted, pending FROM (
        SELECT a.id, a.unit, a.allow_negative, a.pending,
               a.posted + coalesce((SELECT sum(s.posted) FROM account_shards s
                                     WHERE s.account_id = a.id), 0) AS posted
          FROM accounts a
    ) balances
     WHERE NOT allow_negative AND (posted < 0 OR posted - pending < 0)
     ORDER BY id
     LIMIT :limit
    """
)
_EXPIRED_HOLDS = text(
    """
    SELECT global_tx_id, branch_id, expires_at
      FROM holds
     WHERE state = 'pending' AND expires_at < :cutoff
     ORDER BY expires_at
     LIMIT :limit
    """
)


class SqlLedgerAuditRepository:
    """The audit's queries on the unit of work's session (reads only)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def findings(self, hold_cutoff: datetime, limit: int) -> list[LedgerFinding]:
        found: list[LedgerFinding] = []
        for row in (await self._session.execute(_UNBALANCED, {"limit": limit})).all():
            found.append(
                LedgerFinding(
                    FindingKind.UNBALANCED_TRANSACTION,
                    row.transfer_id,
                    f"{row.unit} sums to {row.total}",
                )
            )
        for row in (await self._session.execute(_BREACHES, {"limit": limit})).all():
            found.append(
                LedgerFinding(
                    FindingKind.BALANCE_LIMIT_BREACH,
                    row.id,
                    f"{row.unit}: balance {row.posted}, held {row.pending}",
                )
            )
        params = {"cutoff": hold_cutoff, "limit": limit}
        for row in (await self._session.execute(_EXPIRED_HOLDS, params)).all():
            found.append(
                LedgerFinding(
                    FindingKind.EXPIRED_HOLD_UNRELEASED,
                    f"{row.global_tx_id}/{row.branch_id}",
                    f"expired at {row.expires_at.isoformat()}",
                )
            )
        return found
