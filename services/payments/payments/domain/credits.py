"""Credits a plan purchase issues on the wallet's ledger (CR-2) and revokes on refund: the durable
grant that is written with the settlement and retried until the wallet acknowledges it."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from payments.domain.transactions import Transaction, UserType

JOB_CREDIT = "JOB_CREDIT"
CANDIDATE_CREDIT = "CANDIDATE_CREDIT"
CREDIT_UNITS = (JOB_CREDIT, CANDIDATE_CREDIT)

# Metadata keys of a transaction: the credits its plan granted when it was bought (a snapshot,
# so changing the catalogue later never changes what an earlier purchase issues or revokes).
JOB_CREDITS_KEY = "job_credits"
CANDIDATE_CREDITS_KEY = "candidate_credits"


class GrantKind(enum.StrEnum):
    # The purchase was paid: its money from provider clearing to platform revenue, its credits
    # from ISSUANCE to the user (ESC-1: every captured subscription is booked on the ledger).
    ISSUE = "issue"
    # The purchase was refunded: the money back to clearing, its unused credits back to ISSUANCE.
    REVOKE = "revoke"


class GrantStatus(enum.StrEnum):
    PENDING = "pending"  # not acknowledged by the wallet yet
    DONE = "done"


def credits_of(txn: Transaction) -> dict[str, int]:
    """The credits a purchase grants, per unit (units with none left out)."""
    granted = {
        JOB_CREDIT: int(txn.metadata.get(JOB_CREDITS_KEY, "0") or 0),
        CANDIDATE_CREDIT: int(txn.metadata.get(CANDIDATE_CREDITS_KEY, "0") or 0),
    }
    return {unit: amount for unit, amount in granted.items() if amount > 0}


def _booked(txn: Transaction) -> dict[str, int]:
    return (
        {txn.currency: txn.amount_minor, **credits_of(txn)} if txn.amount_minor else credits_of(txn)
    )


@dataclass(slots=True)
class CreditGrant:
    """One ledger movement a settled purchase owes: issuing its credits, or revoking them.

    `transfer_id` is the wallet's idempotency key, derived from the transaction, so a retry after
    a crash or a lost answer can never move the credits twice. For a revocation, `amounts` is
    planned once from what is still unused and kept, so every retry sends the same transfer."""

    id: str
    kind: GrantKind
    transaction_id: str
    user_type: UserType
    user_id: str
    granted: dict[str, int]  # what the purchase booked, per unit (its currency and credit units)
    amounts: dict[str, int] | None  # what this grant moves (None: a revocation not planned yet)
    status: GrantStatus
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    done_at: datetime | None = None
    last_error: str = ""

    @property
    def transfer_id(self) -> str:
        return f"plan-{self.kind.value}-{self.transaction_id}"

    @property
    def used(self) -> dict[str, int]:
        """For a done revocation: the credits of the purchase already spent (kept, reported)."""
        if self.kind is not GrantKind.REVOKE or self.amounts is None:
            return {}
        return {
            unit: n - self.amounts.get(unit, 0)
            for unit, n in self.granted.items()
            if unit in CREDIT_UNITS
        }

    @classmethod
    def issue(cls, txn: Transaction, now: datetime) -> CreditGrant:
        """What a paid purchase owes the ledger: its money booked and its credits issued."""
        granted = _booked(txn)
        return cls(
            id=f"{GrantKind.ISSUE.value}:{txn.id}",
            kind=GrantKind.ISSUE,
            transaction_id=txn.id,
            user_type=txn.user_type,
            user_id=txn.user_id,
            granted=granted,
            amounts=dict(granted),
            status=GrantStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )

    @classmethod
    def revoke(cls, txn: Transaction, now: datetime) -> CreditGrant:
        """What a refunded purchase owes the ledger; its credits are planned later from what is
        still unused."""
        granted = _booked(txn)
        return cls(
            id=f"{GrantKind.REVOKE.value}:{txn.id}",
            kind=GrantKind.REVOKE,
            transaction_id=txn.id,
            user_type=txn.user_type,
            user_id=txn.user_id,
            granted=granted,
            amounts=None,
            status=GrantStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )

    def plan_revocation(self, available: dict[str, int]) -> dict[str, int]:
        """Take back what is unused of this purchase: at most what it granted, at most what the
        user still has (the rest was spent and stays spent); the money goes back in full."""
        self.amounts = {
            unit: n if unit not in CREDIT_UNITS else max(0, min(n, available.get(unit, 0)))
            for unit, n in self.granted.items()
        }
        return self.amounts

    def done(self, now: datetime) -> None:
        self.status = GrantStatus.DONE
        self.done_at = now
        self.last_error = ""

    def retry_later(self, now: datetime, delay_seconds: float, error: str) -> None:
        self.attempts += 1
        self.next_attempt_at = now + timedelta(seconds=delay_seconds)
        self.last_error = error[:500]
