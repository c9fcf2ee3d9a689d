"""HTTP models of the marketplace (ESC-6..10): jobs for contractors, job requests and offers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from gateway.api.models import AmountMinor, MoneyIn, MoneyOut, MoneyUnit, Strict, _text

MarketJobStatus = Literal["open", "assigned", "closed"]
JobRequestStatus = Literal["pending", "accepted", "rejected"]
OfferState = Literal[
    "reserving", "pending", "accepting", "accepted", "rejected", "expired", "withdrawn", "failed"
]
EngagementState = Literal["open", "assigned", "in_progress", "completed", "cancelled", "disputed"]
Funding = Literal["card", "coins"]


class BudgetIn(Strict):
    """A budget hint in minor units, in a currency or COIN."""

    amount_minor: AmountMinor
    currency: MoneyUnit


class MarketJobIn(Strict):
    """A job a customer posts for contractors (no posting fee)."""

    title: _text(3, 200)  # type: ignore[valid-type]
    description: _text(10, 20_000)  # type: ignore[valid-type]
    category: str = Field(default="", max_length=64)
    budget: BudgetIn | None = None


class MarketJobOut(BaseModel):
    jobId: str
    customerId: str
    title: str
    description: str
    category: str
    budget: MoneyOut | None
    status: MarketJobStatus
    contractorId: str | None
    engagementId: str | None
    accepting: bool  # one offer's acceptance holds the job right now
    createdAt: str
    updatedAt: str | None


class MarketJobsOut(BaseModel):
    jobs: list[MarketJobOut]
    nextPageToken: str | None


class JobRequestIn(Strict):
    """A contractor asks for an open job (ESC-10)."""

    jobId: str = Field(min_length=1, max_length=200)
    message: str = Field(default="", max_length=2_000)


class JobRequestOut(BaseModel):
    id: str
    jobId: str
    jobTitle: str
    customerId: str
    contractorId: str
    message: str
    status: JobRequestStatus
    createdAt: str
    decidedAt: str | None


class JobRequestsOut(BaseModel):
    jobRequests: list[JobRequestOut]


class DecisionIn(Strict):
    decision: Literal["accept", "reject"]


class OfferIn(Strict):
    """An offer to a contractor for one of the caller's open jobs. `card`: `amount` in a currency
    and a provider token `paymentMethod` (pm_..., authorized now, captured on acceptance);
    `coins`: `amount` in COIN, held on the caller's coin wallet."""

    jobId: str = Field(min_length=1, max_length=200)
    contractorId: str = Field(min_length=1, max_length=128)
    amount: MoneyIn
    funding: Funding
    paymentMethod: str = Field(default="", max_length=255)
    message: str = Field(default="", max_length=2_000)


class OfferOut(BaseModel):
    id: str
    jobId: str
    customerId: str
    contractorId: str
    amount: MoneyOut
    funding: str
    state: OfferState
    reason: str | None
    paymentId: str | None
    engagementId: str | None
    message: str
    expiresAt: str | None
    createdAt: str
    decidedAt: str | None
    released: bool  # its reservation is released (nothing held any more)


class EngagementOut(BaseModel):
    """The money of the work: amount A, the 10% taken on acceptance, the escrow (A - 10%)."""

    id: str
    jobId: str
    customerId: str
    contractorId: str
    amount: MoneyOut
    acceptanceFee: MoneyOut
    escrow: MoneyOut
    escrowAccountId: str
    funding: str
    paymentId: str | None
    offerId: str | None
    state: EngagementState
    createdAt: str
    assignedAt: str | None


class OfferResultOut(BaseModel):
    offer: OfferOut
    engagement: EngagementOut | None


class OffersOut(BaseModel):
    offers: list[OfferOut]
