"""HTTP models of plans, credits, subscription status, purchase refunds (CR-1..3, API-6) and of
applications (ESC-10, CR-3)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from gateway.api.models import Strict


class PriceOut(BaseModel):
    amountMinor: int
    currency: str
    amount: str  # decimal string with the currency's exponent, never a float


class PlanOut(BaseModel):
    """A plan of the catalogue: who buys it, its prices, period and the credits it grants."""

    code: str
    userType: str
    name: str
    prices: list[PriceOut]
    periodDays: int
    jobCredits: int
    candidateCredits: int
    maxJobPosts: int  # the job posts its job credits pay for
    free: bool  # listed, never bought (everyone starts on it)


class PlansOut(BaseModel):
    plans: list[PlanOut]


class SubscriptionOut(BaseModel):
    """The subscription currently active (API-6)."""

    transactionId: str
    plan: str
    status: str  # Active (today within its dates) or Scheduled (paid, starts later)
    startDate: str
    endDate: str  # ends at the start of this day
    expiresAt: str


class CreditsOut(BaseModel):
    """`GET /api/credits` (CR-3): what a company can spend."""

    jobCredits: int
    candidateCredits: int
    maxJobPosts: int  # floor(jobCredits / creditsPerJobPost)
    creditsPerJobPost: int
    plan: str  # the active subscription's plan, or FREE_LAUNCHPAD
    subscription: SubscriptionOut | None


class StatusOut(BaseModel):
    """`GET /api/payments/status`: the caller's premium status (and credits for a company)."""

    userType: str
    premium: bool
    plan: str | None
    subscription: SubscriptionOut | None
    jobCredits: int | None = None
    candidateCredits: int | None = None
    maxJobPosts: int | None = None


class RefundIn(Strict):
    reason: Literal["requested_by_customer", "duplicate", "fraudulent"] = "requested_by_customer"


class CreditsMoved(BaseModel):
    jobCredits: int
    candidateCredits: int


class RefundOut(BaseModel):
    """An admin's refund of a purchase: the transaction and what happened to its credits."""

    transactionId: str
    status: str  # REFUNDED
    revocationDone: bool  # False: the wallet is being retried; read the transaction again
    revoked: CreditsMoved | None  # unused credits of the purchase taken back
    used: CreditsMoved | None  # credits of the purchase already spent (kept)


class ApplyIn(Strict):
    """`POST /api/jobs/{id}/applications` (ESC-10)."""

    name: str = Field(min_length=1, max_length=200)
    email: str = Field(min_length=3, max_length=254)
    coverLetter: str = Field(default="", max_length=5000)
    resumeUrl: str = Field(default="", max_length=2000)


class DecisionIn(Strict):
    decision: Literal["accept", "reject"]


class ApplicantOut(BaseModel):
    """The applicant's details: the applicant's own, or a company's paid view (CR-3)."""

    applicantId: str
    name: str
    email: str
    coverLetter: str
    resumeUrl: str | None


class ApplicationOut(BaseModel):
    id: str
    jobId: str
    jobTitle: str
    status: Literal["pending", "accepted", "rejected"]
    createdAt: str | None
    decidedAt: str | None
    applicant: ApplicantOut | None  # None in a company's free list until it pays to view


class ViewOut(BaseModel):
    """`POST /api/applications/{id}/view`: the details, and whether this view took a credit."""

    application: ApplicationOut
    charged: bool


class ApplicationsOut(BaseModel):
    applications: list[ApplicationOut]
