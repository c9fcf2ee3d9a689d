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
    RETURNED = "returned"  # the refund failed (or the coins were not there): the hold released
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
