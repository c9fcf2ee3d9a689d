"""HTTP request and response models (distinct types from the protos; see api/convert.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from hirepay_platform.money import MAX_AMOUNT_MINOR
from hirepay_platform.untrusted import text_problem, visible_length

EmploymentType = Literal["full_time", "part_time", "contract", "internship", "temporary"]
JobStatus = Literal[
    "draft", "pending_payment", "payment_failed", "active", "expired", "filled", "cancelled"
]
JobPaymentStatus = Literal["pending", "completed", "failed", "refunded"]


def _clean_text(min_visible: int) -> AfterValidator:
    """The one check of free text: no NUL or lone surrogate, and at least `min_visible` characters
    a person can see (zero-width and other invisible characters do not count)."""

    def check(value: str) -> str:
        problem = text_problem(value)
        if problem is not None:
            raise ValueError(problem)
        # (No count for a minimum of none: every length passes it. A posting's provider token.)
        if min_visible > 0 and visible_length(value) < min_visible:
            raise ValueError(f"must have at least {min_visible} visible characters")
        return value

    return AfterValidator(check)


def _text(min_length: int, max_length: int) -> Any:
    """A text field: its length bounds are in the OpenAPI schema, and the visible-character
    minimum is checked too (so "\u200b\u200b\u200b" is not a 3-character title)."""
    return Annotated[
        str, Field(min_length=min_length, max_length=max_length), _clean_text(min_length)
    ]


# The jobs service's bounds (domain/model.py), stated in the schema and checked at the edge.
Title = _text(3, 200)
Description = _text(20, 20_000)
Location = _text(1, 200)
Category = _text(1, 100)
Reason = _text(0, 500)
ProviderToken = _text(0, 255)
Identifier = _text(1, 200)
TermsVersion = _text(0, 100)
PlanName = _text(1, 64)
Email = Annotated[
    str,
    Field(
        min_length=5,
        max_length=254,
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
        json_schema_extra={"format": "email"},
    ),
    _clean_text(5),
]


def _absolute_http_url(value: str) -> str:
    """Redirect targets handed to the provider must be absolute http(s) URLs; whether their origin
    is allowed is the gateway's setting (entrypoints/redirects.py)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    if text_problem(value) is not None or any(ch.isspace() for ch in value):
        raise ValueError("must be an absolute http(s) URL")
    return value


RedirectUrl = Annotated[
    str,
    Field(min_length=8, max_length=2048, json_schema_extra={"format": "uri"}),
    AfterValidator(_absolute_http_url),
]
# Every integer the API takes fits a protobuf int64 / PostgreSQL bigint; money is at most
# MAX_AMOUNT_MINOR, the bound the services check. Amounts are JSON integers only (strict): a
# string "7000" or a float 70.5 is a field error, never coerced into an amount (PAY-11).
AmountMinor = Annotated[int, Field(ge=0, le=MAX_AMOUNT_MINOR, strict=True)]
CurrencyCode = Annotated[str, Field(min_length=3, max_length=3, pattern=r"^[A-Za-z]{3}$")]
# An ISO 4217 code or a non-cash unit such as JOB_CREDIT (hirepay_platform.money).
MoneyUnit = Annotated[str, Field(min_length=3, max_length=16, pattern=r"^[A-Za-z_]{3,16}$")]


class Strict(BaseModel):
    """Request models refuse unknown fields, so a typo is a field error rather than ignored."""

    model_config = ConfigDict(extra="forbid")


# --- Money ---------------------------------------------------------------------------------------


class MoneyIn(Strict):
    """An amount in minor units (cents) and an ISO 4217 code."""

    amount_minor: AmountMinor
    currency: MoneyUnit


class MoneyOut(BaseModel):
    """An amount in minor units and its currency or unit."""

    amount_minor: int
    currency: str


# --- Jobs ----------------------------------------------------------------------------------------


class SalaryRange(Strict):
    """Optional salary range, minor units."""

    min_minor: AmountMinor | None = None
    max_minor: AmountMinor | None = None
    currency: CurrencyCode | None = None


class SalaryRangeOut(BaseModel):
    """A stored salary range, minor units."""

    min_minor: int | None = None
    max_minor: int | None = None
    currency: str | None = None


class JobFieldsIn(Strict):
    """A job's editable fields, with the jobs service's bounds (which also checks the category and
    that the fields required to post are present)."""

    title: Title | None = None
    description: Description | None = None
    location: Location | None = None
    employment_type: EmploymentType | None = None
    category: Category | None = None
    salary_range: SalaryRange | None = None


class JobPatchIn(JobFieldsIn):
    """A PATCH of a draft: the fields to replace (at least one)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})


class JobOut(BaseModel):
    """A job as the API shows it (payment fields only to its owner and admins)."""

    id: str
    status: JobStatus | None
    title: str
    description: str
    location: str
    employment_type: EmploymentType | None
    category: str
    salary_range: SalaryRangeOut | None = None
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

    reason: Reason = ""


class PaymentIn(Strict):
    """How the posting is paid. Card data never reaches Hirepay: send a provider token (pm_...).

    `payment_method` is required for `card`, optional for `bank_transfer` (e.g. pm_bank_transfer)
    and refused for `credits` and `checkout` (the customer pays on the provider's page).
    """

    method: Literal["card", "credits", "bank_transfer", "checkout"]
    payment_method: ProviderToken | None = None
    return_url: RedirectUrl | None = None
    cancel_url: RedirectUrl | None = None
    amount: MoneyIn | None = None


class CreateWithPaymentIn(Strict):
    """`POST /api/jobs/create-with-payment` (PAY-4): a draft id or the job itself, and the payment."""

    job: JobFieldsIn | None = None
    draft_id: Identifier | None = None
    payment: PaymentIn
    accept_terms: bool = False
    terms_version: TermsVersion | None = None


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
    userId: Identifier
    email: Email
    plan: PlanName
    paymentMethod: Literal["STRIPE", "PAYPAL", "RAZORPAY"] = "STRIPE"
    returnUrl: RedirectUrl
    cancelUrl: RedirectUrl
    currency: CurrencyCode | None = None


class SubscribeOut(BaseModel):
    """The pending transaction and where to pay it."""

    transactionId: str
    status: str
    checkoutUrl: str | None
    expiresAt: str | None
    # Seed 003: the order's subscription is on Hold (paymentStatus created) until paid.
    subscriptionStatus: str | None = None
    paymentStatus: str | None = None


class PurchaseDisputeOut(BaseModel):
    """A card dispute (chargeback) of a purchase as its buyer or an admin sees it: amounts in the
    currency's minor units, never the provider's ids or its fees (the merchant's own cost)."""

    status: str = Field(
        description="warning_needs_response, warning_under_review, warning_closed, needs_response,"
        " under_review, won, lost, prevented (the provider's status, Stripe's words)"
    )
    reason: str = Field(description="the cardholder's reason as the provider gives it")
    amountMinor: int = Field(description="the money disputed")
    currency: str
    withdrawnMinor: int = Field(description="what the provider withdrew so far")
    reinstatedMinor: int = Field(description="what it gave back (a dispute won)")
    openedAt: str | None = Field(description="when Hirepay first heard of it")
    closedAt: str | None = Field(default=None, description="when it closed; null while open")


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
    # The purchase's card disputes (chargebacks), oldest first (API-4); none: an empty list.
    disputes: list[PurchaseDisputeOut] = Field(default_factory=list)


class WebhookAck(BaseModel):
    """The provider's delivery was accepted."""

    received: bool = True
    duplicate: bool = False
