"""Named conversions between the marketplace's HTTP models and the jobs contract."""

from __future__ import annotations

from gateway.api import marketplace_models as m
from gateway.api.convert import money_to_http, timestamp_to_iso
from hirepay.common.v1 import common_pb2
from hirepay.jobs.v1 import jobs_service_pb2 as pb

_FUNDING_TO_PROTO = {"card": pb.FUNDING_SOURCE_CARD, "coins": pb.FUNDING_SOURCE_COINS}
_FUNDING_TO_HTTP = {
    pb.FUNDING_SOURCE_CARD: "card",
    pb.FUNDING_SOURCE_COINS: "coins",
    pb.FUNDING_SOURCE_JOB_PAYMENT: "job_payment",
}


def _money(money: common_pb2.Money) -> m.MoneyOut:
    out = money_to_http(money)
    assert out is not None
    return out


def post_job_to_proto(body: m.MarketJobIn, request_id: str) -> pb.PostMarketJobRequest:
    request = pb.PostMarketJobRequest(
        request_id=request_id,
        title=body.title,
        description=body.description,
        category=body.category,
    )
    if body.budget is not None:
        request.budget.CopyFrom(
            common_pb2.Money(
                amount_minor=body.budget.amount_minor, currency=body.budget.currency.upper()
            )
        )
    return request


def market_job_to_http(job: pb.MarketJob) -> m.MarketJobOut:
    return m.MarketJobOut(
        jobId=job.job_id,
        customerId=job.customer_id,
        title=job.title,
        description=job.description,
        category=job.category,
        budget=money_to_http(job.budget, job.HasField("budget")),
        status=pb.MarketJob.Status.Name(job.status).lower(),  # type: ignore[arg-type]
        contractorId=job.contractor_id or None,
        engagementId=job.engagement_id or None,
        accepting=job.accepting,
        createdAt=timestamp_to_iso(job.created_at) or "",
        updatedAt=timestamp_to_iso(job.updated_at),
    )


def market_jobs_to_http(reply: pb.ListMarketJobsResponse) -> m.MarketJobsOut:
    return m.MarketJobsOut(
        jobs=[market_job_to_http(j) for j in reply.jobs],
        nextPageToken=reply.next_page_token or None,
    )


def job_request_to_http(r: pb.JobRequest) -> m.JobRequestOut:
    return m.JobRequestOut(
        id=r.request_id,
        jobId=r.job_id,
        jobTitle=r.job_title,
        customerId=r.customer_id,
        contractorId=r.contractor_id,
        message=r.message,
        status=pb.JobRequest.Status.Name(r.status).lower(),  # type: ignore[arg-type]
        createdAt=timestamp_to_iso(r.created_at) or "",
        decidedAt=timestamp_to_iso(r.decided_at),
    )


def offer_to_proto(body: m.OfferIn, request_id: str, fingerprint: str) -> pb.SendOfferRequest:
    return pb.SendOfferRequest(
        request_id=request_id,
        job_id=body.jobId,
        contractor_id=body.contractorId,
        amount=common_pb2.Money(
            amount_minor=body.amount.amount_minor, currency=body.amount.currency.upper()
        ),
        funding=_FUNDING_TO_PROTO[body.funding],
        payment_method=body.paymentMethod,
        message=body.message,
        request_fingerprint=fingerprint,
    )


def offer_to_http(o: pb.Offer) -> m.OfferOut:
    return m.OfferOut(
        id=o.offer_id,
        jobId=o.job_id,
        customerId=o.customer_id,
        contractorId=o.contractor_id,
        amount=_money(o.amount),
        funding=_FUNDING_TO_HTTP.get(o.funding, ""),
        state=pb.Offer.State.Name(o.state).lower(),  # type: ignore[arg-type]
        reason=o.reason or None,
        paymentId=o.payment_id or None,
        engagementId=o.engagement_id or None,
        message=o.message,
        expiresAt=timestamp_to_iso(o.expires_at),
        createdAt=timestamp_to_iso(o.created_at) or "",
        decidedAt=timestamp_to_iso(o.decided_at),
        released=o.released,
    )


def engagement_to_http(e: pb.Engagement) -> m.EngagementOut:
    return m.EngagementOut(
        id=e.engagement_id,
        jobId=e.job_id,
        customerId=e.customer_id,
        contractorId=e.contractor_id,
        amount=_money(e.amount),
        acceptanceFee=_money(e.acceptance_fee),
        escrow=_money(e.escrow),
        escrowAccountId=e.escrow_account_id,
        funding=_FUNDING_TO_HTTP.get(e.funding, ""),
        paymentId=e.payment_id or None,
        offerId=e.offer_id or None,
        state=pb.Engagement.State.Name(e.state).lower(),  # type: ignore[arg-type]
        createdAt=timestamp_to_iso(e.created_at) or "",
        assignedAt=timestamp_to_iso(e.assigned_at),
    )


def offer_result_to_http(reply: pb.OfferResponse) -> m.OfferResultOut:
    return m.OfferResultOut(
        offer=offer_to_http(reply.offer),
        engagement=engagement_to_http(reply.engagement) if reply.HasField("engagement") else None,
    )
