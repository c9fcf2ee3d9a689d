"""HTTP models of engagements (start, complete, cancel, dispute), admin disputes and coin job
payments (ESC-4, ESC-7, ESC-8, ESC-11), and their conversions from the jobs contract."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from gateway.api.models import CurrencyCode, Email, RedirectUrl, Strict
from hirepay.jobs.v1 import jobs_service_pb2 as pb
from hirepay_platform.money import MAX_AMOUNT_MINOR

_STATES = {
    pb.Engagement.OPEN: "open",
    pb.Engagement.ASSIGNED: "assigned",
    pb.Engagement.IN_PROGRESS: "in_progress",
    pb.Engagement.COMPLETED: "completed",
    pb.Engagement.CANCELLED: "cancelled",
    pb.Engagement.DISPUTED: "disputed",
}
_FUNDING = {
    pb.FUNDING_SOURCE_CARD: "card",
    pb.FUNDING_SOURCE_COINS: "coins",
    pb.FUNDING_SOURCE_JOB_PAYMENT: "job_payment",
}
_RESOLUTIONS = {
    pb.DISPUTE_RESOLUTION_RELEASE: "release",
    pb.DISPUTE_RESOLUTION_REFUND: "refund",
    pb.DISPUTE_RESOLUTION_SPLIT: "split",
}
RESOLUTION_TO_PROTO = {name: wire for wire, name in _RESOLUTIONS.items()}
DISPUTE_STATE_TO_PROTO = {"open": pb.Dispute.OPEN, "resolved": pb.Dispute.RESOLVED}


class CancelIn(Strict):
    reason: str = Field("", max_length=500)


class DisputeIn(Strict):
    reason: str = Field(min_length=1, max_length=2000)


class ResolveIn(Strict):
    """An admin's decision: `release` (the completion split), `refund` (the escrow back, the
    acceptance fee kept) or `split` (`contractorMinor` to the contractor, the rest back)."""

    resolution: Literal["release", "refund", "split"]
    contractorMinor: int = Field(0, ge=0, le=MAX_AMOUNT_MINOR, strict=True)
    note: str = Field("", max_length=2000)


class SettlementIn(Strict):
    """Money owed to the customer paid back outside Hirepay (e.g. a bank transfer): how much,
    in the engagement's currency, and the operator's reference of that payment."""

    amountMinor: int = Field(gt=0, le=MAX_AMOUNT_MINOR, strict=True)
    currency: str = Field(pattern="^[A-Z]{3}$")
    reference: str = Field(min_length=1, max_length=200)
    note: str = Field("", max_length=2000)


class CoinJobPaymentIn(Strict):
    """ESC-4: pay a freelancer for a job from the caller's coins (`amount` in coins)."""

    jobId: str = Field(min_length=1, max_length=64)
    freelancerId: str = Field(min_length=1, max_length=128)
    amount: int = Field(gt=0, le=MAX_AMOUNT_MINOR, strict=True)


class MoneyStepOut(BaseModel):
    """One ledger movement of the engagement."""

    kind: str  # fund | complete | cancel | resolve
    state: str  # pending | done | refused | refund_refused (the provider refused its refund)
    transferId: str
    refundTransferId: str | None
    toRevenueMinor: int
    toContractorMinor: int
    toCustomerMinor: int
    # refund_refused: the card refund the provider refused, owed to the customer instead.
    refusedMinor: int = 0


class DisputeOut(BaseModel):
    id: str
    engagementId: str
    openedBy: str
    reason: str
    state: str  # open | resolved
    resolution: str | None
    contractorMinor: int
    resolvedBy: str | None
    note: str
    openedAt: str
    resolvedAt: str | None


class EngagementOut(BaseModel):
    """The money of one piece of work: amount, the fee taken at funding, the escrow, its state."""

    id: str
    jobId: str
    customerId: str
    contractorId: str
    unit: str  # ISO 4217 currency or COIN
    amountMinor: int
    acceptanceFeeMinor: int
    escrowMinor: int
    escrowAccountId: str
    funding: str  # card | coins | job_payment
    paymentId: str
    offerId: str
    state: str  # open | assigned | in_progress | completed | cancelled | disputed
    createdAt: str
    dispute: DisputeOut | None = None
    steps: list[MoneyStepOut] = []
    # On its receivable for the customer (a refund refused or failed), not yet paid back.
    owedToCustomerMinor: int = 0
    # What admins recorded as paid back to the customer outside Hirepay.
    settledOutsideMinor: int = 0


class DisputesOut(BaseModel):
    disputes: list[DisputeOut]
    nextPageToken: str | None


def _ts(message: object, name: str) -> str | None:
    if not message.HasField(name):  # type: ignore[attr-defined]
        return None
    return getattr(message, name).ToDatetime().isoformat() + "Z"


def dispute_to_http(d: pb.Dispute) -> DisputeOut:
    return DisputeOut(
        id=d.dispute_id,
        engagementId=d.engagement_id,
        openedBy=d.opened_by,
        reason=d.reason,
        state="resolved" if d.state == pb.Dispute.RESOLVED else "open",
        resolution=_RESOLUTIONS.get(d.resolution),
        contractorMinor=d.contractor_minor,
        resolvedBy=d.resolved_by or None,
        note=d.note,
        openedAt=_ts(d, "opened_at") or "",
        resolvedAt=_ts(d, "resolved_at"),
    )


def engagement_to_http(reply: pb.EngagementResponse) -> EngagementOut:
    e = reply.engagement
    return EngagementOut(
        id=e.engagement_id,
        jobId=e.job_id,
        customerId=e.customer_id,
        contractorId=e.contractor_id,
        unit=e.amount.currency,
        amountMinor=e.amount.amount_minor,
        acceptanceFeeMinor=e.acceptance_fee.amount_minor,
        escrowMinor=e.escrow.amount_minor,
        escrowAccountId=e.escrow_account_id,
        funding=_FUNDING.get(e.funding, "unknown"),
        paymentId=e.payment_id,
        offerId=e.offer_id,
        state=_STATES.get(e.state, "unknown"),
        createdAt=_ts(e, "created_at") or "",
        dispute=dispute_to_http(reply.dispute) if reply.HasField("dispute") else None,
        steps=[
            MoneyStepOut(
                kind=s.kind,
                state=s.state,
                transferId=s.transfer_id,
                refundTransferId=s.refund_transfer_id or None,
                toRevenueMinor=s.to_revenue_minor,
                toContractorMinor=s.to_contractor_minor,
                toCustomerMinor=s.to_customer_minor,
                refusedMinor=s.refused_minor,
            )
            for s in reply.steps
        ],
        owedToCustomerMinor=reply.owed_to_customer_minor,
        settledOutsideMinor=reply.settled_outside_minor,
    )


def disputes_to_http(reply: pb.ListDisputesResponse) -> DisputesOut:
    return DisputesOut(
        disputes=[dispute_to_http(d) for d in reply.disputes],
        nextPageToken=reply.next_page_token or None,
    )


class JobPaymentIn(Strict):
    """ESC-5 `POST /api/payments/job-payment`: pay a freelancer for a job through a provider
    checkout; `amount` in the currency's minor units (the coins it buys go into escrow)."""

    jobId: str = Field(min_length=1, max_length=64)
    freelancerId: str = Field(min_length=1, max_length=128)
    amount: Annotated[int, Field(gt=0, le=MAX_AMOUNT_MINOR, strict=True)]
    currency: CurrencyCode = "USD"
    provider: Literal["STRIPE", "FATORA"] | None = None
    email: Email | None = None
    returnUrl: RedirectUrl
    cancelUrl: RedirectUrl


class JobPaymentOut(BaseModel):
    """The open checkout and the engagement it funds (`open` until the payment succeeds, then
    `assigned` with its escrow)."""

    engagement: EngagementOut
    paymentId: str
    checkoutUrl: str


def job_payment_to_http(reply: pb.StartJobPaymentResponse) -> JobPaymentOut:
    return JobPaymentOut(
        engagement=engagement_to_http(pb.EngagementResponse(engagement=reply.engagement)),
        paymentId=reply.payment_id,
        checkoutUrl=reply.checkout_url,
    )
