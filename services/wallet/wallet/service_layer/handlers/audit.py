"""The ledger audit (OPS-3): the ledger's own invariants, read for the consistency auditor."""

from __future__ import annotations

from datetime import timedelta

from wallet.domain import commands
from wallet.domain.audit import LedgerFinding
from wallet.service_layer.deps import Deps

MAX_FINDINGS = 1000


async def audit_ledger(cmd: commands.AuditLedger, deps: Deps) -> list[LedgerFinding]:
    """Transfers that do not balance, balances past their limits, expired holds still pending
    (reported once `hold_grace_seconds` past expiry: the expiry worker's slack). Read-only."""
    limit = min(max(cmd.limit, 1), MAX_FINDINGS)
    async with deps.uow() as uow:
        cutoff = deps.clock() - timedelta(seconds=max(cmd.hold_grace_seconds, 0))
        return await uow.audit.findings(cutoff, limit)
