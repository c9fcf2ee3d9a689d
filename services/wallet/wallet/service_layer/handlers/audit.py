"""The ledger audit (OPS-3): the ledger's own invariants, read for the consistency auditor."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from wallet.domain import commands, errors
from wallet.domain.audit import LedgerFinding
from wallet.domain.ledger import Entry
from wallet.service_layer.deps import Deps

MAX_FINDINGS = 1000


async def audit_ledger(cmd: commands.AuditLedger, deps: Deps) -> list[LedgerFinding]:
    """Transfers that do not balance, balances past their limits, expired holds still pending
    (reported once `hold_grace_seconds` past expiry: the expiry worker's slack). Read-only.

    With `changed_since` (an incremental round of the auditor) the zero-sum check covers the
    transfers with an entry created since then; the other two read current state every round."""
    limit = min(max(cmd.limit, 1), MAX_FINDINGS)
    async with deps.uow() as uow:
        cutoff = deps.clock() - timedelta(seconds=max(cmd.hold_grace_seconds, 0))
        return await uow.audit.findings(cutoff, limit, cmd.changed_since)


async def audit_transfer_entries(transfer_ids: Sequence[str], deps: Deps) -> list[Entry]:
    """The entries of the given transfers (payments' bookings check, OPS-3). Read-only."""
    if len(transfer_ids) > MAX_FINDINGS:
        raise errors.invalid("transfer_ids", f"at most {MAX_FINDINGS} per call")
    async with deps.uow() as uow:
        return await uow.audit.transfer_entries(transfer_ids)
