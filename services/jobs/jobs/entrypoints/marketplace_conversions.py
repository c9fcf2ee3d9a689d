"""Named conversions between the marketplace messages of the jobs contract and the domain."""

from __future__ import annotations

from hirepay.common.v1 import common_pb2
from hirepay.jobs.v1 import jobs_service_pb2 as pb
from hirepay_platform.wire import timestamp
from jobs.domain import commands
from jobs.domain.marketplace import (
    Engagement,
    EngagementState,
    FundingSource,
    JobRequestStatus,
    MarketJob,
    MarketJobStatus,
    Offer,
    OfferState,
)
from jobs.service_layer.marketplace.market_jobs import JobRequestView, MarketJobPage
from jobs.service_layer.marketplace.offers import OfferView

_JOB_STATUS = {
    MarketJobStatus.OPEN: pb.MarketJob.OPEN,
    MarketJobStatus.ASSIGNED: pb.MarketJob.ASSIGNED,
    MarketJobStatus.CLOSED: pb.MarketJob.CLOSED,
}
_REQUEST_STATUS = {
    JobRequestStatus.PENDING: pb.JobRequest.PENDING,
    JobRequestStatus.ACCEPTED: pb.JobRequest.ACCEPTED,
    JobRequestStatus.REJECTED: pb.JobRequest.REJECTED,
}
_FUNDING_TO_PROTO = {
    FundingSource.CARD: pb.FUNDING_SOURCE_CARD,
    FundingSource.COINS: pb.FUNDING_SOURCE_COINS,
    FundingSource.JOB_PAYMENT: pb.FUNDING_SOURCE_JOB_PAYMENT,
}
_FUNDING_FROM_PROTO = {
    pb.FUNDING_SOURCE_CARD: "card",
    pb.FUNDING_SOURCE_COINS: "coins",
}
_OFFER_STATE = {s: pb.Offer.State.Value(s.name) for s in OfferState}
_ENGAGEMENT_STATE = {s: pb.Engagement.State.Value(s.name) for s in EngagementState}


def _money(amount_minor: int, unit: str) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount_minor, currency=unit)


def market_job_to_proto(job: MarketJob) -> pb.MarketJob:
    f = job.fields
    message = pb.MarketJob(
        job_id=job.id,
        customer_id=job.customer_id,
        title=f.title,
        description=f.description,
        category=f.category,
        status=_JOB_STATUS[job.status],
        contractor_id=job.contractor_id,
        engagement_id=job.engagement_id,
        accepting=bool(job.accepting_offer_id),
        created_at=timestamp(job.created_at),
        updated_at=timestamp(job.updated_at),
    )
    if f.currency:
        message.budget.CopyFrom(_money(f.budget_minor, f.currency))
    return message


def market_page_to_proto(page: MarketJobPage) -> pb.ListMarketJobsResponse:
    return pb.ListMarketJobsResponse(
        jobs=[market_job_to_proto(j) for j in page.jobs], next_page_token=page.next_page_token
    )


def post_market_job_from_proto(
    actor: commands.Actor, request: pb.PostMarketJobRequest
) -> commands.PostMarketJob:
    return commands.PostMarketJob(
        actor=actor,
        title=request.title,
        description=request.description,
        category=request.category,
        budget_minor=request.budget.amount_minor,
        currency=request.budget.currency,
        request_id=request.request_id,
    )


def job_request_to_proto(view: JobRequestView) -> pb.JobRequest:
    r = view.request
    message = pb.JobRequest(
        request_id=r.id,
        job_id=r.job_id,
        customer_id=r.customer_id,
        contractor_id=r.contractor_id,
        message=r.message,
        status=_REQUEST_STATUS[r.status],
        job_title=view.job_title,
        created_at=timestamp(r.created_at),
    )
    if r.decided_at is not None:
        message.decided_at.CopyFrom(timestamp(r.decided_at))
    return message


def send_offer_from_proto(
    actor: commands.Actor, request: pb.SendOfferRequest
) -> commands.SendOffer:
    return commands.SendOffer(
        actor=actor,
        job_id=request.job_id,
        contractor_id=request.contractor_id,
        amount_minor=request.amount.amount_minor,
        unit=request.amount.currency,
        funding=_FUNDING_FROM_PROTO.get(request.funding, ""),
        payment_token=request.payment_method,
        message=request.message,
        request_id=request.request_id,
        fingerprint=request.request_fingerprint,
    )


def offer_to_proto(offer: Offer) -> pb.Offer:
    message = pb.Offer(
        offer_id=offer.id,
        job_id=offer.job_id,
        customer_id=offer.customer_id,
        contractor_id=offer.contractor_id,
        amount=_money(offer.amount_minor, offer.unit),
        funding=_FUNDING_TO_PROTO[offer.funding],
        state=_OFFER_STATE[offer.state],
        reason=offer.reason,
        payment_id=offer.payment_id,
        engagement_id=offer.engagement_id,
        message=offer.message,
        expires_at=timestamp(offer.expires_at),
        created_at=timestamp(offer.created_at),
        released=offer.released_at is not None,
    )
    if offer.decided_at is not None:
        message.decided_at.CopyFrom(timestamp(offer.decided_at))
    return message


def engagement_to_proto(e: Engagement) -> pb.Engagement:
    message = pb.Engagement(
        engagement_id=e.id,
        job_id=e.job_id,
        customer_id=e.customer_id,
        contractor_id=e.contractor_id,
        amount=_money(e.amount_minor, e.unit),
        acceptance_fee=_money(e.fee1_minor, e.unit),
        escrow=_money(e.escrow_minor, e.unit),
        escrow_account_id=e.escrow_account_id,
        funding=_FUNDING_TO_PROTO[e.funding],
        payment_id=e.payment_id,
        offer_id=e.offer_id,
        state=_ENGAGEMENT_STATE[e.state],
        created_at=timestamp(e.created_at),
    )
    if e.assigned_at is not None:
        message.assigned_at.CopyFrom(timestamp(e.assigned_at))
    return message


def offer_response(view: OfferView) -> pb.OfferResponse:
    response = pb.OfferResponse(offer=offer_to_proto(view.offer))
    if view.engagement is not None:
        response.engagement.CopyFrom(engagement_to_proto(view.engagement))
    return response
