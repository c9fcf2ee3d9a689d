"""Refunds of a captured payment: the amount is reserved on the payment before the provider call,
and for a payment that issued coins (a coin purchase, a direct job payment) the coins it bought are
held on the buyer's coin wallet before it too (ESC-1, ESC-3: cash back and coins kept would create
money)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

# The request id of a refund made at the provider: `provider:<provider refund id>`, unique per
# payment (uq_refunds_request) like the provider refund id itself.
PROVIDER_REQUEST_PREFIX = "provider:"


# The failure message of a refund that succeeded and failed at the provider afterwards.
FAILED_AFTER_SUCCESS = "failed_after_success"


class RefundStatus(enum.StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class CoinsState(enum.StrEnum):
    """Where the coins a refund takes back stand on the wallet (hold branch `refund:<id>`)."""

    NONE = ""  # the payment issued no coins: nothing to take back
    RESERVING = "reserving"  # recorded; the hold on the buyer's coins is being reserved
    HELD = "held"  # held: the provider may be asked; then posted or released
    TAKEN = "taken"  # the refund succeeded: the hold is posted back to coin issuance
    # The refund failed (or the coins were not there): the hold released; or, for a refund that
    # failed after it succeeded, the coins it had taken back given back by its reversal booking.
    RETURNED = "returned"
    # A refund made at the provider (the cash is gone already) whose coins were no longer there
    # (spent, or held by an offer or a withdrawal): they stay with the buyer, never taken below
    # zero; the shortfall is recorded (metric, audit trail) for the platform to recover.
    SHORT = "short"


@dataclass(slots=True)
class Refund:
    id: str
    payment_id: str
    request_id: str
    amount_minor: int
    currency: str
    reason: str
    status: RefundStatus
    idempotency_key: str
    created_at: datetime
    updated_at: datetime
    requested_minor: int = 0  # as asked (0 = everything left), for replay checks
    provider_refund_id: str = ""
    failure_message: str = ""
    next_poll_at: datetime | None = None
    poll_attempts: int = 0
    coins: int = 0  # the coins this refund takes back (0: the payment issued none)
    coins_state: CoinsState = CoinsState.NONE

    @property
    def made_at_provider(self) -> bool:
        """Whether the refund was made at the provider, outside Hirepay (learned by webhook)."""
        return self.request_id.startswith(PROVIDER_REQUEST_PREFIX)

    @property
    def coins_owed(self) -> bool:
        """Whether the wallet still has to follow the refund's outcome with the coin hold."""
        return self.coins_state in (CoinsState.RESERVING, CoinsState.HELD)

    def fail_after_success(self, reason: str, now: datetime) -> int:
        """The provider reports this succeeded refund failed (the money never reached the
        customer): FAILED, with the provider's reason. Returns the coins its reversal booking
        gives back to the buyer: those it had taken (TAKEN). Coins recorded short were never
        taken (nothing to give back, no shortfall left); a hold still owed (RESERVING, HELD) is
        released by the refund's own coin step (advance_refund), as for any failed refund."""
        given_back = self.coins if self.coins_state is CoinsState.TAKEN else 0
        if self.coins_state in (CoinsState.TAKEN, CoinsState.SHORT):
            self.coins_state = CoinsState.RETURNED
        self.status = RefundStatus.FAILED
        self.failure_message = f"{FAILED_AFTER_SUCCESS}: {reason or 'unknown'}"[:500]
        self.updated_at = now
        return given_back
