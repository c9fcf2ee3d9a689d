"""Read-only SQL of the ledger audit: the invariants the write path guarantees, checked again over
the stored rows (an unbalanced transfer, a balance past its limit, an expired hold still pending).

The zero-sum check reads every entry on a full sweep and, on an incremental round, only the
transfers with an entry created since the round's `changed_since` (through the entries'
`created_at` BRIN index, wallet migration 0006): its cost follows what changed, not the ledger's
history (issue 13)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from wallet.adapters.repositories.ledger import _entry_from_row
from wallet.domain.audit import FindingKind, LedgerFinding
from wallet.domain.ledger import Entry

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
# The same over the transfers with an entry created since :since only. `created_at` is the
# inserting transaction's start time, so a transaction that commits late carries an older time:
# the caller's `since` keeps an overlap for that (jobs' auditor: AUDIT_OVERLAP_SECONDS). The
# window's transfer ids are an array computed first, so their entries are read by the transfer id
# index whatever the table's statistics (a semi-join may hash them and scan every entry).
_UNBALANCED_SINCE = text(
    """
    SELECT transfer_id, unit, sum(amount) AS total
      FROM entries
     WHERE transfer_id = ANY(ARRAY(SELECT transfer_id FROM entries WHERE created_at >= :since))
     GROUP BY transfer_id, unit
    HAVING sum(amount) <> 0
     ORDER BY transfer_id
     LIMIT :limit
    """
)
# The entries of given transfers (the bookings check of payments), by the transfer id index.
_TRANSFER_ENTRIES = text(
    """
    SELECT e.id, e.transfer_id, CAST(e.account_id AS text) AS account_id, e.unit, e.amount,
           e.created_at, t.description
      FROM entries e JOIN transfers t ON t.id = e.transfer_id
     WHERE e.transfer_id = ANY(:ids)
     ORDER BY e.id
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

    async def findings(
        self, hold_cutoff: datetime, limit: int, changed_since: datetime | None = None
    ) -> list[LedgerFinding]:
        """Every broken invariant, at most `limit` per kind; with `changed_since`, the zero-sum
        check covers the transfers with an entry created since then only."""
        found: list[LedgerFinding] = []
        if changed_since is None:
            unbalanced = await self._session.execute(_UNBALANCED, {"limit": limit})
        else:
            params = {"since": changed_since, "limit": limit}
            unbalanced = await self._session.execute(_UNBALANCED_SINCE, params)
        for row in unbalanced.all():
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

    async def transfer_entries(self, transfer_ids: Sequence[str]) -> list[Entry]:
        """Every entry of the given transfers, by entry id (none for an unknown transfer)."""
        if not transfer_ids:
            return []
        rows = await self._session.execute(_TRANSFER_ENTRIES, {"ids": list(transfer_ids)})
        return [_entry_from_row(row, row.description) for row in rows]
