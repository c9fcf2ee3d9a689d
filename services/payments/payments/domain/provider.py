"""The payment provider port: what the service asks of a provider, in the service's own types.

Adapters (Stripe) implement `PaymentProvider` and translate their wire objects and exceptions into
these types, so no provider type ever reaches the handlers.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class IntentStatus(enum.StrEnum):
    """Where a provider payment (PaymentIntent) stands."""

    REQUIRES_PAYMENT_METHOD = "requires_payment_method"
    REQUIRES_CONFIRMATION = "requires_confirmation"
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"
    REQUIRES_CAPTURE = "requires_capture"
    CANCELED = "canceled"
    SUCCEEDED = "succeeded"


@dataclass(frozen=True, slots=True)
class ProviderErrorInfo:
    """The provider's last error on a payment (a decline)."""

    code: str = ""
    decline_code: str = ""
    message: str = ""
    param: str = ""


@dataclass(frozen=True, slots=True)
class ProviderIntent:
    """A provider payment as the service sees it."""

    id: str
    status: IntentStatus
    amount_minor: int
    currency: str
    amount_capturable: int = 0
    amount_received: int = 0
    amount_refunded: int = 0
    customer_id: str = ""
    next_action_url: str = ""
    last_error: ProviderErrorInfo | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    cancellation_reason: str = ""


class CheckoutStatus(enum.StrEnum):
    OPEN = "open"
    COMPLETE = "complete"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class ProviderCheckout:
    """A provider hosted checkout session."""

    id: str
    status: CheckoutStatus
    payment_status: str  # paid | unpaid | no_payment_required
    url: str
    expires_at: datetime | None
    payment_intent_id: str = ""
    customer_id: str = ""
    amount_minor: int = 0
    currency: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProviderRefund:
    id: str
    status: str  # pending | succeeded | failed | canceled
    amount_minor: int


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """A verified webhook event: only its identity is trusted; the object is re-fetched."""

    id: str
    type: str
    created: datetime
    object_type: str  # payment_intent | checkout.session | charge | ...
    object_id: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    payment_intent_id: str = ""


@dataclass(frozen=True, slots=True)
class AuthorizeIntent:
    """What to create for a CARD or BANK_TRANSFER payment."""

    amount_minor: int
    currency: str
    payment_method: str
    manual_capture: bool
    description: str
    metadata: Mapping[str, str]
    return_url: str = ""
    email: str = ""


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    """A hosted checkout for one amount."""

    amount_minor: int
    currency: str
    product_name: str
    success_url: str
    cancel_url: str
    metadata: Mapping[str, str]
    client_reference_id: str
    manual_capture: bool
    expires_at: datetime | None = None
    email: str = ""
    customer_id: str = ""  # the provider's customer record; else `email` prefills the page


# --- failures ---------------------------------------------------------------------------------


class ProviderFailure(Exception):
    """Base of what a provider call can fail with."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CardDeclined(ProviderFailure):
    """A definite refusal: nothing was taken. `intent_id` names the failed intent if one exists."""

    def __init__(self, error: ProviderErrorInfo, intent_id: str = "") -> None:
        super().__init__(error.message or "declined")
        self.error = error
        self.intent_id = intent_id


class InvalidRequest(ProviderFailure):
    """The provider refused the request itself (bad parameters, wrong state, unknown object)."""

    def __init__(self, message: str, *, code: str = "", param: str = "", status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.param = param
        self.status = status

    @property
    def about_payment_method(self) -> bool:
        return self.param.startswith("payment_method") or self.code in {
            "payment_method_invalid_parameter",
            "payment_method_unactivated",
            "payment_method_unexpected_state",
        }


class OutcomeUnknown(ProviderFailure):
    """No usable answer (timeout, connection lost, 5xx, concurrent twin): it may or may not have
    happened. The same idempotency key must be replayed to learn which."""

    def __init__(self, message: str, *, timeout: bool) -> None:
        super().__init__(message)
        self.timeout = timeout


class SignatureInvalid(ProviderFailure):
    """A webhook signature that does not verify (forged, stale, re-serialised, missing)."""


class PaymentProvider(Protocol):
    """One payment provider. Every mutating call carries an idempotency key tied to the business
    operation; replaying it returns the first result (or performs the operation now)."""

    name: str

    async def create_customer(self, email: str, idempotency_key: str) -> str: ...

    async def authorize(self, request: AuthorizeIntent, idempotency_key: str) -> ProviderIntent: ...

    async def capture(
        self, intent_id: str, amount_minor: int, idempotency_key: str
    ) -> ProviderIntent: ...

    async def cancel(self, intent_id: str, idempotency_key: str) -> ProviderIntent: ...

    async def refund(
        self,
        intent_id: str,
        amount_minor: int,
        reason: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> ProviderRefund: ...

    async def retrieve_payment(self, intent_id: str) -> ProviderIntent: ...

    async def create_checkout(
        self, request: CheckoutRequest, idempotency_key: str
    ) -> ProviderCheckout: ...

    async def expire_checkout(self, session_id: str, idempotency_key: str) -> ProviderCheckout: ...

    async def retrieve_checkout(self, session_id: str) -> ProviderCheckout: ...

    def construct_event(self, payload: bytes, signature: str) -> ProviderEvent: ...
