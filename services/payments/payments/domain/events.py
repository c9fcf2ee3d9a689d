"""Settlement events and the audit trail: what the outbox publishes and what is appended for
every attempt, provider call and transition (PAY-15)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from payments.domain.model import Payment
    from payments.domain.payouts import Withdrawal
    from payments.domain.transactions import Transaction


class EventType(enum.StrEnum):
    """Settlement events published through the outbox (API-5)."""

    PAYMENT_AUTHORIZED = "payment.authorized"
    PAYMENT_CAPTURED = "payment.captured"
    PAYMENT_FAILED = "payment.failed"
    PAYMENT_VOIDED = "payment.voided"
    PAYMENT_REFUNDED = "payment.refunded"
    # A chargeback lost in full: the card's issuer returned the money to the customer (the
    # payment stays CAPTURED; what was captured was taken back by the dispute, not refunded).
    PAYMENT_CHARGED_BACK = "payment.charged_back"
    # A refund of marketplace offer money that succeeded and then failed at the provider (the
    # card closed since): reversed here, and jobs books its reversal (it booked the refund).
    PAYMENT_REFUND_FAILED = "payment.refund_failed"
    TRANSACTION_SUCCEEDED = "transaction.succeeded"
    TRANSACTION_FAILED = "transaction.failed"
    TRANSACTION_CANCELLED = "transaction.cancelled"
    TRANSACTION_REFUNDED = "transaction.refunded"
    PAYOUT_PAID = "payout.paid"
    PAYOUT_FAILED = "payout.failed"


# Each type by its stored text, for reading the outbox (a dict look-up, not the enum's call).
EVENT_TYPE_OF = {e.value: e for e in EventType}


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One append-only audit record (PAY-15): never secrets or card data."""

    action: str  # attempt | provider_call | transition | webhook | refund
    actor: str
    reason: str
    details: dict[str, str]
    payment_id: str = ""
    transaction_id: str = ""
    id: int = 0
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """A settlement event written in the same transaction as the state change it reports."""

    event_id: str
    type: EventType
    occurred_at: datetime
    subsystem: str
    payment: Payment | None = None
    transaction: Transaction | None = None
    cursor: int = 0
    withdrawal: Withdrawal | None = None
