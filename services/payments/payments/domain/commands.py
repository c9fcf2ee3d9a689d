"""Commands the payments service handles: what each use case is asked, in domain terms."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from hirepay_platform.tcc import TccBranch
from payments.domain.model import Method
from payments.domain.transactions import UserType


@dataclass(frozen=True, slots=True)
class Authorize:
    request_id: str
    branch: TccBranch
    owner_id: str
    amount_minor: int
    currency: str
    method: Method | None
    payment_method_token: str = ""
    description: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    return_url: str = ""
    cancel_url: str = ""
    email: str = ""
    provider: str = ""  # empty: the service's default provider


@dataclass(frozen=True, slots=True)
class Capture:
    request_id: str
    branch: TccBranch
    amount_minor: int = 0


@dataclass(frozen=True, slots=True)
class Void:
    request_id: str
    branch: TccBranch
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Refund:
    request_id: str
    payment_id: str
    amount_minor: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Subscribe:
    request_id: str
    user_type: UserType | None
    user_id: str
    email: str
    plan: str
    payment_method: str
    return_url: str
    cancel_url: str
    currency: str = ""


@dataclass(frozen=True, slots=True)
class CancelCheckout:
    request_id: str
    transaction_id: str = ""
    payment_id: str = ""


@dataclass(frozen=True, slots=True)
class ProviderEventDelivery:
    """One webhook delivery: the raw body and the headers the provider signs with."""

    provider: str
    payload: bytes
    signature: str = ""  # the Stripe-Signature header (older callers); see `headers`
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names

    def signing_headers(self) -> dict[str, str]:
        headers = {k.lower(): v for k, v in self.headers.items()}
        if self.signature and "stripe-signature" not in headers:
            headers["stripe-signature"] = self.signature
        return headers


@dataclass(frozen=True, slots=True)
class ConfirmReturn:
    """A customer back from a provider's page with its parameters (e.g. Razorpay's signed
    `razorpay_order_id`, `razorpay_payment_id`, `razorpay_signature`)."""

    provider: str
    params: dict[str, str]


@dataclass(frozen=True, slots=True)
class ListPayments:
    """Payments in some states (all when empty), of one subsystem (all when empty), by id."""

    states: frozenset[str] = frozenset()
    subsystem: str = ""
    page_size: int = 200
    after_id: str = ""
    global_tx_ids: frozenset[str] = frozenset()  # only these transactions' (all when empty)
    updated_since: datetime | None = None  # only those changed since (the auditor's round)


@dataclass(frozen=True, slots=True)
class ReconcileProvider:
    """Compare the `limit` most recently changed payments with the provider's records."""

    limit: int = 100


@dataclass(frozen=True, slots=True)
class RefundTransaction:
    """An admin refunds a subscription purchase in full (its unused credits are revoked)."""

    request_id: str
    transaction_id: str
    reason: str = "requested_by_customer"
    actor: str = ""


@dataclass(frozen=True, slots=True)
class CreatePayoutAccount:
    """Connect a payout account for `user_id` (idempotent: one per user)."""

    user_id: str
    email: str = ""
    country: str = ""  # empty: the configured default


@dataclass(frozen=True, slots=True)
class RequestWithdrawal:
    """Withdraw available wallet money to the user's payout account (ESC-9)."""

    request_id: str
    user_id: str
    amount_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class ListWithdrawals:
    user_id: str
    page_size: int = 50
    page_token: str = ""


@dataclass(frozen=True, slots=True)
class CoinCheckout:
    """A provider checkout selling coins (ESC-3), or paying a job directly (ESC-5) when
    `engagement_id` is set: the amount is in the currency's minor units."""

    request_id: str
    payer_id: str
    amount_minor: int
    currency: str
    provider: str = ""  # empty: the service's default provider
    email: str = ""
    return_url: str = ""
    cancel_url: str = ""
    engagement_id: str = ""
    job_id: str = ""
    freelancer_id: str = ""
