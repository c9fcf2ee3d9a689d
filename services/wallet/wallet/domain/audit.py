"""The ledger's own invariants as the consistency auditor reads them (OPS-3, ESC-1, ESC-2)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FindingKind(enum.StrEnum):
    """Which ledger invariant is broken (the auditor's `check` label)."""

    UNBALANCED_TRANSACTION = "unbalanced_transaction"  # entries do not sum to zero per unit
    BALANCE_LIMIT_BREACH = "balance_limit_breach"  # below zero (or holds above the balance)
    EXPIRED_HOLD_UNRELEASED = "expired_hold_unreleased"  # pending past its expiry


@dataclass(frozen=True, slots=True)
class LedgerFinding:
    """One broken invariant and the id of the transfer, account or hold that breaks it."""

    kind: FindingKind
    subject_id: str
    detail: str
