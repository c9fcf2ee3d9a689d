"""Subscription purchases (API-4): a transaction settled from the provider's view of its hosted
checkout; the verified payment always wins, and a settled transaction never moves back."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from payments.domain.events import EventType
from payments.domain.model import decline_reason
from payments.domain.provider import (
    CheckoutState,
    ProviderCheckout,
    ProviderPayment,
    ProviderStatus,
)


class UserType(enum.StrEnum):
    COMPANY = "COMPANY"
    APPLICANT = "APPLICANT"


class TxnStatus(enum.StrEnum):
    SUCCESS = "SUCCESS"
    PENDING = "PENDING"
    FAILED = "FAILED"
    REFUNDED = "REFUNDED"
    CANCELLED = "CANCELLED"


@dataclass(slots=True)
class Transaction:
    """A payment transaction of the shared Payment API (API-4): one subscription purchase."""

    id: str
    status: TxnStatus
    user_type: UserType
    user_id: str
    email: str
    amount_minor: int
    currency: str
    payment_method: str
    provider: str
    plan: str
    period_days: int
    request_id: str
    return_url: str
    cancel_url: str
    created_at: datetime
    updated_at: datetime
    checkout_key: str = ""
    expire_key: str = ""
    provider_transaction_id: str = ""  # the checkout session (cs_...)
    provider_payment_intent_id: str = ""  # the provider's payment id (column name kept)
    provider_customer_id: str = ""
    checkout_url: str = ""
    expires_at: datetime | None = None
    subscription_start: date | None = None
    subscription_end: date | None = None
    failure_reason: str = ""
    failure_code: str = ""
    decline_code: str = ""
    failure_message: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def subsystem(self) -> str:
        return self.metadata.get("subsystem", "")

    def is_active(self, today: date) -> bool:
        """Premium is active from the start date until (not including) the end date."""
        return (
            self.status is TxnStatus.SUCCESS
            and self.subscription_start is not None
            and self.subscription_end is not None
            and self.subscription_start <= today < self.subscription_end
        )

    def apply_checkout(
        self,
        session: ProviderCheckout,
        intent: ProviderPayment | None,
        today: date,
        starts_after: date | None,
        now: datetime,
    ) -> list[EventType]:
        """Take the provider's current view; the verified payment always wins."""
        before = self.status
        self.provider_transaction_id = session.id
        if session.customer_id:
            self.provider_customer_id = session.customer_id
        if session.payment_id:
            self.provider_payment_intent_id = session.payment_id
        paid = session.paid or (intent is not None and intent.status is ProviderStatus.CAPTURED)
        if paid:
            self.succeed(today, starts_after)
        elif self.status is TxnStatus.SUCCESS or self.status is TxnStatus.REFUNDED:
            pass
        elif session.state is CheckoutState.EXPIRED:
            # An expired checkout cancels what was pending; a declined one stays FAILED.
            if self.status is TxnStatus.PENDING:
                self.status = TxnStatus.CANCELLED
            self.checkout_url = ""
        elif intent is not None and intent.status is ProviderStatus.CANCELED:
            self.status = TxnStatus.CANCELLED
        elif (
            intent is not None
            and intent.status is ProviderStatus.FAILED
            and intent.last_error is not None
        ):
            self.status = TxnStatus.FAILED
            self.failure_reason = decline_reason(intent.last_error)
            self.failure_code = intent.last_error.code
            self.decline_code = intent.last_error.decline_code
            self.failure_message = intent.last_error.message
        self.updated_at = now
        return self._events(before)

    def succeed(self, today: date, starts_after: date | None) -> None:
        if self.status is TxnStatus.SUCCESS or self.status is TxnStatus.REFUNDED:
            return
        start = max(today, starts_after) if starts_after else today
        self.status = TxnStatus.SUCCESS
        self.subscription_start = start
        self.subscription_end = start + timedelta(days=self.period_days)
        self.failure_reason = self.failure_code = self.decline_code = self.failure_message = ""
        self.checkout_url = ""

    def cancel(self, now: datetime) -> list[EventType]:
        before = self.status
        if self.status in (TxnStatus.PENDING, TxnStatus.FAILED):
            self.status = TxnStatus.CANCELLED
            self.checkout_url = ""
        self.updated_at = now
        return self._events(before)

    def _events(self, before: TxnStatus) -> list[EventType]:
        if before is self.status:
            return []
        return {
            TxnStatus.SUCCESS: [EventType.TRANSACTION_SUCCEEDED],
            TxnStatus.FAILED: [EventType.TRANSACTION_FAILED],
            TxnStatus.CANCELLED: [EventType.TRANSACTION_CANCELLED],
        }.get(self.status, [])
