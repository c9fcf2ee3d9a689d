"""HTTP request and response models (distinct types from the protos; see api/convert.py)."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

EmploymentType = Literal["full_time", "part_time", "contract", "internship", "temporary"]
JobStatus = Literal[
    "draft", "pending_payment", "payment_failed", "active", "expired", "filled", "cancelled"
]
JobPaymentStatus = Literal["pending", "completed", "failed", "refunded"]


def _absolute_http_url(value: str) -> str:
    """Redirect targets handed to the provider must be absolute http(s) URLs."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http(s) URL")
    return value


RedirectUrl = Annotated[str, Field(max_length=2048), AfterValidator(_absolute_http_url)]


class Strict(BaseModel):
    """Request models refuse unknown fields, so a typo is a field error rather than ignored."""

    model_config = ConfigDict(extra="forbid")


# --- Money ---------------------------------------------------------------------------------------


class MoneyIn(Strict):
    """An amount in minor units (cents) and an ISO 4217 code."""

    amount_minor: int = Field(ge=0, le=10**15)
    currency: str = Field(min_length=3, max_length=16)


class MoneyOut(BaseModel):
    """An amount in minor units and its currency or unit."""

    amount_minor: int
    currency: str


# --- Jobs ----------------------------------------------------------------------------------------


class SalaryRange(Strict):
    """Optional salary range, minor units."""

    min_minor: int | None = Field(default=None, ge=0)
    max_minor: int | None = Field(default=None, ge=0)
    currency: str | None = Field(default=None, max_length=3)


class JobFieldsIn(Strict):
    """A job's editable fields; the jobs service checks them (title 3-200, description >= 20...)."""

    title: str | None = Field(default=None, max_length=1000)
    description: str | None = Field(default=None, max_length=20000)
    location: str | None = Field(default=None, max_length=1000)
    employment_type: EmploymentType | None = None
    category: str | None = Field(default=None, max_length=100)
    salary_range: SalaryRange | None = None


class JobOut(BaseModel):
    """A job as the API shows it (payment fields only to its owner and admins)."""

    id: str
    status: JobStatus | None
    title: str
    description: str
    location: str
    employment_type: EmploymentType | None
    category: str
    salary_range: SalaryRange | None = None
    payment_id: str | None = None
    payment_status: JobPaymentStatus | None = None
    payment_amount: MoneyOut | None = None
    payment_method: str | None = None
    failure_reason: str | None = None
    posted_at: str | None = None
    expires_at: str | None = None
    terms_version: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


class JobListOut(BaseModel):
    """One page of jobs."""

    jobs: list[JobOut]
    next_page_token: str | None = None


class PreviewOut(BaseModel):
    """The job as it will be posted, with its fee and the terms to accept (PAY-2)."""

    job: JobOut
    fee: MoneyOut | None
    fee_credits: int
    terms_version: str
    posting_days: int


class TransitionOut(BaseModel):
    """One recorded status change."""

    from_status: JobStatus | None
    to_status: JobStatus | None
    actor: str
    reason: str
    at: str | None


class TransitionListOut(BaseModel):
    """A job's audit trail of status changes, oldest first."""

    transitions: list[TransitionOut]


class CancelJobIn(Strict):
    """Why a posting is cancelled."""

    reason: str = Field(default="", max_length=500)


class PaymentIn(Strict):
    """How the posting is paid. Card data never reaches Hirepay: send a provider token (pm_...).

    `payment_method` is required for `card`, optional for `bank_transfer` (e.g. pm_bank_transfer)
    and refused for `credits` and `checkout` (the customer pays on the provider's page).
    """

    method: Literal["card", "credits", "bank_transfer", "checkout"]
    payment_method: str | None = Field(default=None, max_length=255)
    return_url: RedirectUrl | None = None
    cancel_url: RedirectUrl | None = None
    amount: MoneyIn | None = None


class CreateWithPaymentIn(Strict):
    """`POST /api/jobs/create-with-payment` (PAY-4): a draft id or the job itself, and the payment."""

    job: JobFieldsIn | None = None
    draft_id: str | None = Field(default=None, min_length=1, max_length=200)
    payment: PaymentIn
    accept_terms: bool = False
    terms_version: str | None = Field(default=None, max_length=100)


class PaymentOut(BaseModel):
    """The payment of a posting."""

    id: str | None
    status: str | None
    amount: MoneyOut | None
    method: str


class NextAction(BaseModel):
    """What the customer must do to finish paying (3-D Secure, bank transfer, hosted checkout)."""

    type: Literal["redirect_to_url"] = "redirect_to_url"
    url: str


class CreateWithPaymentOut(BaseModel):
    """201: the job is active; 202: it is pending_payment and `next_action` says what to do."""

    job: JobOut
    payment: PaymentOut
    next_action: NextAction | None = None


# --- Subscriptions (shared Payment API, seed 004) ------------------------------------------------


class SubscribeIn(Strict):
    """`POST /api/payments/subscribe` (API-1)."""

    userType: Literal["COMPANY", "APPLICANT"]
    userId: str = Field(min_length=1, max_length=200)
    email: str = Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    plan: str = Field(min_length=1, max_length=64)
    paymentMethod: Literal["STRIPE", "PAYPAL"] = "STRIPE"
    returnUrl: RedirectUrl
    cancelUrl: RedirectUrl
    currency: str | None = Field(default=None, min_length=3, max_length=3)


class SubscribeOut(BaseModel):
    """The pending transaction and where to pay it."""

    transactionId: str
    status: str
    checkoutUrl: str | None
    expiresAt: str | None


class VerifyOut(BaseModel):
    """`GET /api/payments/verify/{transactionId}` (API-2). `amount` is a decimal string, never a float."""

    transactionId: str
    status: str
    email: str
    amount: str
    amountMinor: int
    currency: str
    plan: str | None = None
    timestamp: str | None
    subscriptionStartDate: str | None
    subscriptionEndDate: str | None
    # Seed 003: the subscription is on Hold (paymentStatus created) until a verified payment makes
    # it Active (paid); Failed/failed, Cancelled/cancelled, Refunded/refunded, Scheduled, Expired.
    subscriptionStatus: str | None = None
    paymentStatus: str | None = None
    jobCredits: int = 0  # credits the purchase issues once paid (CR-2)
    candidateCredits: int = 0


class WebhookAck(BaseModel):
    """The provider's delivery was accepted."""

    received: bool = True
    duplicate: bool = False
