"""Holds: the wallet's side of the two-phase (Try-Confirm-Cancel) handshake, as a state machine.

A hold reserves an amount on an account for one branch of a global transaction; it resolves once:
confirmed (posted, in full or in part), cancelled (released) or expired (released by the worker).
The barrier that guards the three calls is the platform's (`hirepay_platform.tcc`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from hirepay_platform import money
from hirepay_platform.errors import HirepayError
from hirepay_platform.tcc import TccBranch
from wallet.domain.errors import HoldAlreadyResolved, HoldExpired, invalid
from wallet.domain.ledger import BalanceChange

DEFAULT_HOLD_TTL = timedelta(seconds=900)
MAX_HOLD_TTL = timedelta(days=30)


def confirm_transfer_id(branch: TccBranch) -> str:
    """Id of the transfer a Confirm posts; "/" keeps it apart from every client-chosen id."""
    return f"hold/{branch.global_tx_id}/{branch.branch_id}"


class HoldState(enum.StrEnum):
    """Lifecycle of a hold: pending, then exactly one of the three resolutions."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


def hold_ttl(expires_in_seconds: int) -> timedelta:
    """Validate a requested hold lifetime; 0 means the default."""
    if expires_in_seconds < 0:
        raise invalid("expires_in_seconds", "must not be negative")
    ttl = timedelta(seconds=expires_in_seconds) if expires_in_seconds else DEFAULT_HOLD_TTL
    if ttl > MAX_HOLD_TTL:
        raise invalid("expires_in_seconds", "must be at most 30 days")
    return ttl


@dataclass(slots=True)
class Hold:
    """An amount reserved on an account: it reduces what is available until it resolves, once."""

    branch: TccBranch
    account_id: str
    destination_account_id: str
    unit: str
    amount: int
    expires_at: datetime
    created_at: datetime
    description: str = ""
    state: HoldState = HoldState.PENDING
    confirmed_amount: int = 0
    transfer_id: str | None = None
    resolved_at: datetime | None = None

    def reservation(self) -> BalanceChange:
        """What reserving the hold does to its account: the amount becomes pending."""
        return BalanceChange(self.account_id, 0, self.amount)

    def _refuse_unless_pending(self) -> None:
        if self.state is not HoldState.PENDING:
            raise HoldAlreadyResolved(
                self.branch.global_tx_id, self.branch.branch_id, self.state.value
            )

    def release(self) -> BalanceChange:
        """What resolving the hold does to its account's pending balance: the whole hold leaves it
        (a Confirm posts its part as entries; the rest becomes available again)."""
        return BalanceChange(self.account_id, 0, -self.amount)

    def confirm(self, amount: int, now: datetime) -> int:
        """Resolve the hold by posting `amount` of it (0 = all); returns the amount posted."""
        self._refuse_unless_pending()
        if now >= self.expires_at:
            raise HoldExpired(self.branch.global_tx_id, self.branch.branch_id)
        posted = amount or self.amount
        money.validate_amount(posted, field="amount_minor")
        if posted > self.amount:
            raise invalid("amount_minor", f"must not exceed the held amount {self.amount}")
        self.state = HoldState.CONFIRMED
        self.confirmed_amount = posted
        self.transfer_id = confirm_transfer_id(self.branch)
        self.resolved_at = now
        return posted

    def cancel(self, now: datetime) -> bool:
        """Resolve the hold by releasing it; False when it had already expired (nothing to do,
        and the Cancel still succeeds: the money is free either way)."""
        if self.state is HoldState.EXPIRED:
            return False
        self._refuse_unless_pending()
        self.state = HoldState.CANCELLED
        self.resolved_at = now
        return True

    def expire(self, now: datetime) -> None:
        """Resolve a pending hold whose expiry has passed (the expiry worker)."""
        self._refuse_unless_pending()
        if now < self.expires_at:
            raise HirepayError("hold has not expired yet", reason="HOLD_NOT_EXPIRED")
        self.state = HoldState.EXPIRED
        self.resolved_at = now
