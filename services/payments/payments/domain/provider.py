"""The payment provider port: what the service asks of any provider, in the service's own words.

Adapters (Stripe, PayPal, Razorpay, Fatora) implement `PaymentProvider` and translate their wire
objects, statuses and exceptions into these types, so no provider vocabulary reaches the handlers.
A provider knows two kinds of object: a *payment* (money authorized, captured, cancelled,
refunded) and a *checkout* (a page where the customer pays, which ends in a payment).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


class ProviderStatus(enum.StrEnum):
    """Where a provider payment stands, in the domain's words."""

    AWAITING_PAYMENT = "awaiting_payment"  # nothing paid and nothing refused yet
    ACTION_REQUIRED = "action_required"  # the customer must act (3-D Secure, an approval, a bank)
    PROCESSING = "processing"  # settling by itself (a bank debit, a capture under review)
    AUTHORIZED = "authorized"  # money reserved, to be captured
    CAPTURED = "captured"  # money taken
    CANCELED = "canceled"  # the reservation is released; nothing taken
    FAILED = "failed"  # the last attempt was refused (`last_error`); a page may allow another


class CheckoutState(enum.StrEnum):
    """Where a checkout (a page the customer pays on) stands."""

    OPEN = "open"
    COMPLETE = "complete"
    EXPIRED = "expired"


class RefundState(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class EventSubject(enum.StrEnum):
    """What a webhook event is about."""

    PAYMENT = "payment"
    CHECKOUT = "checkout"
    PAYOUT = "payout"  # a payout to a connected account's bank (ESC-9)
    DISPUTE = "dispute"  # a card dispute (chargeback) of a captured payment
    # A refund of a payment, whoever made it (Hirepay, the provider's dashboard, the provider
    # itself): the payment's refunds re-fetched and each one recorded once (provider_refunds.py).
    REFUND = "refund"
    OTHER = "other"  # customers, ...: recorded, not applied


@dataclass(frozen=True, slots=True)
class ProviderErrorInfo:
    """Why the provider declined a payment: its code, finer reason and message."""

    code: str = ""
    decline_code: str = ""
    message: str = ""
    param: str = ""


@dataclass(frozen=True, slots=True)
class ProviderPayment:
    """A provider payment as the service sees it."""

    id: str
    status: ProviderStatus
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
    # An authorization the provider releases by itself by this time (a provider without a void,
    # e.g. Razorpay's auto-refund): until then it reads AUTHORIZED although we cancelled it.
    release_due: datetime | None = None

    def abandoned(self, *still_open: ProviderStatus) -> ProviderPayment:
        """For a provider with nothing to call to cancel: a payment in one of `still_open`
        states is abandoned (never taken for payable again) and reported CANCELED, nothing held
        or taken; any other is returned as it is (a captured one must be refunded)."""
        if self.status not in still_open:
            return self
        return ProviderPayment(
            id=self.id,
            status=ProviderStatus.CANCELED,
            amount_minor=self.amount_minor,
            currency=self.currency,
            metadata=self.metadata,
        )


@dataclass(frozen=True, slots=True)
class ProviderCheckout:
    """A provider checkout: where the customer pays; `payment_id` once a payment exists."""

    id: str
    state: CheckoutState
    paid: bool
    url: str
    expires_at: datetime | None
    payment_id: str = ""
    customer_id: str = ""
    amount_minor: int = 0
    currency: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProviderRefund:
    id: str
    state: RefundState
    amount_minor: int
    reason: str = ""  # the provider's reason ("" when it gives none, e.g. a dashboard refund)
    # The refund's metadata: Hirepay's own refunds carry `hirepay_refund_id` (their record).
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Why a refund failed, as the provider says (Stripe's `failure_reason`, e.g. a refund that
    # succeeded and failed since: expired_or_canceled_card); "" when it did not fail or gives none.
    failure_reason: str = ""


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """A verified webhook event: only its identity is trusted; the object is re-fetched.

    `view`: the payment as the event carries it (it may be stale), when the adapter can read it;
    never applied, only used to tell an event that brings nothing new (Payment.tells_nothing_new)."""

    id: str
    type: str
    created: datetime
    subject: EventSubject
    object_id: str  # the payment's or the checkout's provider id (per `subject`)
    metadata: Mapping[str, str] = field(default_factory=dict)
    payment_id: str = ""  # a checkout event's payment, when the provider names it
    account: str = ""  # the connected account the object lives on (Connect), if any
    view: ProviderPayment | None = None
    # The whole body as the adapter parsed it (stored as the event's payload), so the handler
    # does not parse it again (issue 13); None: the handler parses the delivery's bytes.
    body: dict[str, Any] | None = None
    # The JSON text `body` was parsed from, when that is the whole delivery: stored as it is,
    # not serialized again from `body` (issue 13); "": `body` is serialized.
    body_text: str = ""


@dataclass(frozen=True, slots=True)
class CheckoutReturn:
    """A customer back from a provider's page, its parameters verified by the adapter."""

    checkout_id: str
    payment_id: str = ""
    reference: str = ""  # our own id the page was opened for, when the provider echoes it


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    """What to create for a payment with a token (CARD or BANK_TRANSFER)."""

    amount_minor: int
    currency: str
    payment_method: str  # an opaque provider token; only the adapter knows its format
    manual_capture: bool
    description: str
    metadata: Mapping[str, str]
    return_url: str = ""
    email: str = ""


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    """A checkout for one amount.

    `success_url` is where the customer finally lands (the caller's page); `confirm_url` is ours,
    for providers whose page hands the outcome back to the merchant's server first (Razorpay's
    signed callback, Fatora's redirect before verify)."""

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
    confirm_url: str = ""


# --- payouts (ESC-9) ---------------------------------------------------------------------------


class PayoutStatus(enum.StrEnum):
    """Where a payout to a bank stands, in the domain's words."""

    PENDING = "pending"  # created, not sent to the bank yet
    IN_TRANSIT = "in_transit"  # on its way to the bank
    PAID = "paid"
    FAILED = "failed"
    CANCELED = "canceled"


@dataclass(frozen=True, slots=True)
class ProviderPayoutAccount:
    """A user's account at the provider that payouts go to."""

    id: str
    payouts_enabled: bool


@dataclass(frozen=True, slots=True)
class ProviderTransfer:
    """Money moved from the platform's provider balance to a payout account."""

    id: str
    amount_minor: int
    amount_reversed: int = 0


@dataclass(frozen=True, slots=True)
class ProviderPayout:
    """A payout from a payout account's balance to its bank."""

    id: str
    status: PayoutStatus
    amount_minor: int
    failure_code: str = ""
    failure_message: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PayoutAccountRequest:
    """What to open for a user at the provider (and where its onboarding comes back to)."""

    user_id: str
    email: str
    country: str
    return_url: str
    refresh_url: str


# --- failures ---------------------------------------------------------------------------------


class ProviderFailure(Exception):
    """Base of what a provider call can fail with."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Declined(ProviderFailure):
    """A definite refusal with its reason: nothing was taken. `payment_id` names the failed
    provider payment if one exists."""

    def __init__(self, error: ProviderErrorInfo, payment_id: str = "") -> None:
        super().__init__(error.message or "declined")
        self.error = error
        self.payment_id = payment_id


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
    happened. The same idempotency key must be replayed (or the object read) to learn which."""

    def __init__(self, message: str, *, timeout: bool) -> None:
        super().__init__(message)
        self.timeout = timeout


class SignatureInvalid(ProviderFailure):
    """A webhook or return signature that does not verify (forged, stale, re-serialised)."""


# --- the port ---------------------------------------------------------------------------------

# Anything that could be a card number (13-19 digits, optionally grouped) is refused before any
# provider sees it, whatever the provider's token format (API-7).
_CARD_NUMBER = re.compile(r"[\d\s-]{13,23}")


def looks_like_card_number(token: str) -> bool:
    digits = re.sub(r"[\s-]", "", token)
    return bool(_CARD_NUMBER.fullmatch(token)) and 13 <= len(digits) <= 19 and digits.isdigit()


class PaymentProvider(Protocol):
    """One payment provider. Every mutating call carries an idempotency key tied to the business
    operation; replaying it returns the first result (or performs the operation now)."""

    name: str
    # Whether the provider sends an event for a refund made at it, outside Hirepay (its
    # dashboard, or by itself). True: the event books it (provider_refunds.apply_refund_event).
    # False (Fatora documents no refund event): nothing tells Hirepay but the reconciliation's
    # read of the payment's refunds (OPS-3), which then books it through the same core.
    refunds_by_event: bool

    def accepts_payment_method(self, token: str) -> bool:
        """Whether `token` is one of this provider's payment method tokens (format only)."""
        ...

    async def create_customer(self, email: str, idempotency_key: str) -> str:
        """The provider's customer record for `email` ("" when the provider keeps none)."""
        ...

    async def authorize(
        self, request: AuthorizeRequest, idempotency_key: str
    ) -> ProviderPayment: ...

    async def capture(
        self, payment_id: str, amount_minor: int, idempotency_key: str
    ) -> ProviderPayment: ...

    async def cancel(self, payment_id: str, idempotency_key: str) -> ProviderPayment: ...

    async def refund(
        self,
        payment_id: str,
        amount_minor: int,
        reason: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> ProviderRefund:
        """Refund `amount_minor`; `reason` is the domain's (the adapter maps it to its own)."""
        ...

    async def retrieve_payment(self, payment_id: str) -> ProviderPayment: ...

    async def list_refunds(self, payment_id: str) -> list[ProviderRefund]:
        """Every refund the provider holds for the payment, whoever made it (reconciliation)."""
        ...

    async def create_checkout(
        self, request: CheckoutRequest, idempotency_key: str
    ) -> ProviderCheckout: ...

    async def expire_checkout(self, checkout_id: str, idempotency_key: str) -> ProviderCheckout: ...

    async def retrieve_checkout(self, checkout_id: str) -> ProviderCheckout: ...

    async def verify_event(self, payload: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        """The event of a webhook delivery, verified the provider's own way over the raw body
        (`headers` lower-cased); SignatureInvalid otherwise."""
        ...

    async def verify_return(self, params: Mapping[str, str]) -> CheckoutReturn:
        """The checkout a customer came back from (the page's parameters), verified the
        provider's own way; SignatureInvalid otherwise."""
        ...


class PayoutProvider(Protocol):
    """A provider that pays users out (Stripe Connect): accounts, transfers to them and payouts
    to their banks. Every mutating call carries an idempotency key tied to the business step."""

    name: str

    async def create_payout_account(
        self, request: PayoutAccountRequest, idempotency_key: str
    ) -> ProviderPayoutAccount: ...

    async def onboarding_link(self, account_id: str, request: PayoutAccountRequest) -> str:
        """A URL where the user completes the provider's onboarding of `account_id`."""
        ...

    async def retrieve_payout_account(self, account_id: str) -> ProviderPayoutAccount: ...

    async def transfer(
        self,
        account_id: str,
        amount_minor: int,
        currency: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> ProviderTransfer: ...

    async def reverse_transfer(
        self, transfer_id: str, metadata: Mapping[str, str], idempotency_key: str
    ) -> ProviderTransfer:
        """Take the whole (remaining) transfer back to the platform's balance."""
        ...

    async def payout(
        self,
        account_id: str,
        amount_minor: int,
        currency: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> ProviderPayout: ...

    async def retrieve_payout(self, account_id: str, payout_id: str) -> ProviderPayout: ...
