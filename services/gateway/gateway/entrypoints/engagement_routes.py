"""Engagements over HTTP (ESC-7, ESC-8, ESC-11, ESC-4): the contractor starts, the customer
completes or cancels, either party disputes, admins list and resolve disputes, and a customer pays
a job from coins. Engagements of others answer 404; admin routes 403 for everyone else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request

from gateway.api import escrow_models as m
from gateway.api.errors import error_responses
from gateway.entrypoints.deps import BackendsDep, check_redirects, require_roles
from gateway.service_layer.auth import Principal
from gateway.service_layer.idempotency import optional_key, require_key
from hirepay.common.v1 import common_pb2
from hirepay.jobs.v1 import jobs_service_pb2 as pb

router = APIRouter(tags=["engagements"])

Party = Annotated[Principal, Depends(require_roles("customer", "contractor"))]
Customer = Annotated[Principal, Depends(require_roles("customer"))]
Admin = Annotated[Principal, Depends(require_roles("admin"))]
EngagementId = Annotated[str, Path(min_length=1, max_length=64)]
DisputeId = Annotated[str, Path(min_length=1, max_length=64)]
IdempotencyHeader = Annotated[str | None, Header(alias="Idempotency-Key")]


async def _call(backends: BackendsDep, rpc: Callable[..., Any], request: Any, slow: bool) -> Any:
    """One JobsService call; money-moving calls get the saga's longer budget."""
    jobs = backends.jobs
    timeout = jobs.saga_timeout if slow else None
    return await jobs.client.call(rpc, request, timeout=timeout)


@router.get(
    "/api/engagements/{engagement_id}",
    response_model=m.EngagementOut,
    summary="One engagement with its dispute and money steps",
    responses=error_responses(401, 403, 404, 503),
)
async def get_engagement(
    engagement_id: EngagementId, principal: Party, backends: BackendsDep
) -> m.EngagementOut:
    request = pb.GetEngagementRequest(engagement_id=engagement_id)
    reply = await _call(backends, backends.jobs.stub.GetEngagement, request, False)
    return m.engagement_to_http(reply)


@router.post(
    "/api/engagements/{engagement_id}/start",
    response_model=m.EngagementOut,
    summary="The contractor starts the work (assigned -> in_progress)",
    responses=error_responses(401, 403, 404, 409, 503),
)
async def start(
    engagement_id: EngagementId, principal: Party, backends: BackendsDep
) -> m.EngagementOut:
    request = pb.EngagementActionRequest(engagement_id=engagement_id)
    reply = await _call(backends, backends.jobs.stub.StartEngagement, request, False)
    return m.engagement_to_http(reply)


@router.post(
    "/api/engagements/{engagement_id}/complete",
    response_model=m.EngagementOut,
    summary="The customer completes: 20% to the platform, the rest of the escrow to the contractor",
    responses=error_responses(401, 403, 404, 409, 503),
)
async def complete(
    engagement_id: EngagementId, principal: Party, backends: BackendsDep
) -> m.EngagementOut:
    """One ledger transfer `engagement:<id>:complete` empties the escrow (ESC-7): of an offer of
    $1,000.00, $100.00 went to the platform on acceptance, $200.00 go now and $700.00 to the
    contractor. Completing again answers `409 INVALID_TRANSITION`; a disputed engagement
    `409 ESCROW_FROZEN`."""
    request = pb.EngagementActionRequest(engagement_id=engagement_id)
    reply = await _call(backends, backends.jobs.stub.CompleteEngagement, request, True)
    return m.engagement_to_http(reply)


@router.post(
    "/api/engagements/{engagement_id}/cancel",
    response_model=m.EngagementOut,
    summary="Cancel by the policy: before work starts everything back, after it the escrow back",
    responses=error_responses(400, 401, 403, 404, 409, 503),
)
async def cancel(
    engagement_id: EngagementId,
    principal: Party,
    backends: BackendsDep,
    body: m.CancelIn | None = None,
) -> m.EngagementOut:
    """Coins go back to the customer's COIN wallet; a card is refunded through the provider."""
    request = pb.EngagementActionRequest(
        engagement_id=engagement_id, reason=body.reason if body else ""
    )
    reply = await _call(backends, backends.jobs.stub.CancelEngagement, request, True)
    return m.engagement_to_http(reply)


@router.post(
    "/api/engagements/{engagement_id}/dispute",
    response_model=m.EngagementOut,
    summary="Open a dispute: the escrow is frozen until an admin resolves it",
    responses=error_responses(400, 401, 403, 404, 409, 503),
)
async def dispute(
    engagement_id: EngagementId, body: m.DisputeIn, principal: Party, backends: BackendsDep
) -> m.EngagementOut:
    request = pb.OpenDisputeRequest(engagement_id=engagement_id, reason=body.reason)
    reply = await _call(backends, backends.jobs.stub.OpenDispute, request, False)
    return m.engagement_to_http(reply)


@router.get(
    "/api/admin/disputes",
    response_model=m.DisputesOut,
    summary="Disputes, oldest first (admins)",
    responses=error_responses(400, 401, 403, 503),
)
async def list_disputes(
    principal: Admin,
    backends: BackendsDep,
    state: Annotated[str | None, Query(pattern="^(open|resolved)$")] = None,
    pageSize: Annotated[int, Query(ge=1, le=200)] = 50,
    pageToken: Annotated[str, Query(max_length=500)] = "",
) -> m.DisputesOut:
    request = pb.ListDisputesRequest(
        state=m.DISPUTE_STATE_TO_PROTO.get(state or "", pb.Dispute.STATE_UNSPECIFIED),
        page=common_pb2.PageRequest(page_size=pageSize, page_token=pageToken),
    )
    reply = await _call(backends, backends.jobs.stub.ListDisputes, request, False)
    return m.disputes_to_http(reply)


@router.post(
    "/api/admin/disputes/{dispute_id}/resolve",
    response_model=m.EngagementOut,
    summary="Resolve a dispute exactly once: release, refund or split (admins)",
    responses=error_responses(400, 401, 403, 404, 409, 503),
)
async def resolve(
    dispute_id: DisputeId, body: m.ResolveIn, principal: Admin, backends: BackendsDep
) -> m.EngagementOut:
    """A second resolution answers `409 DISPUTE_ALREADY_RESOLVED`."""
    request = pb.ResolveDisputeRequest(
        dispute_id=dispute_id,
        resolution=m.RESOLUTION_TO_PROTO[body.resolution],
        contractor_minor=body.contractorMinor,
        note=body.note,
    )
    reply = await _call(backends, backends.jobs.stub.ResolveDispute, request, True)
    return m.engagement_to_http(reply)


@router.post(
    "/api/admin/engagements/{engagement_id}/receivable/settlements",
    response_model=m.EngagementOut,
    summary="Record money owed to the customer as paid back outside Hirepay, once (admins)",
    responses=error_responses(400, 401, 403, 404, 409, 422, 503),
)
async def settle_receivable(
    engagement_id: EngagementId,
    body: m.SettlementIn,
    principal: Admin,
    backends: BackendsDep,
    idempotency_key: IdempotencyHeader = None,
) -> m.EngagementOut:
    """What the engagement's receivable holds for the customer (a refund the provider refused or
    that failed) paid back by other means: receivable -> outside, once per `Idempotency-Key`
    (required). More than is owed: `409 SETTLEMENT_EXCEEDS_OWED`; another currency than the
    engagement's: `400 VALIDATION_FAILED`; nothing changed by either."""
    request = pb.SettleEngagementReceivableRequest(
        request_id=require_key(idempotency_key),
        engagement_id=engagement_id,
        amount=common_pb2.Money(amount_minor=body.amountMinor, currency=body.currency),
        reference=body.reference,
        note=body.note,
    )
    reply = await _call(backends, backends.jobs.stub.SettleEngagementReceivable, request, True)
    return m.engagement_to_http(reply)


@router.post(
    "/api/coins/job-payment",
    status_code=201,
    response_model=m.EngagementOut,
    summary="Pay a job from coins: the escrow is funded at once (ESC-4)",
    responses=error_responses(400, 401, 402, 403, 404, 409, 503),
)
async def coin_job_payment(
    body: m.CoinJobPaymentIn,
    principal: Customer,
    backends: BackendsDep,
    idempotency_key: IdempotencyHeader = None,
) -> m.EngagementOut:
    """10% of the coins to the platform, the rest into the engagement's escrow, in one ledger
    transfer; the job is assigned to the freelancer. Not enough coins: `402 INSUFFICIENT_FUNDS`,
    nothing taken. The same `Idempotency-Key` pays once."""
    request = pb.PayJobWithCoinsRequest(
        request_id=optional_key(idempotency_key) or "",
        job_id=body.jobId,
        freelancer_id=body.freelancerId,
        amount_minor=body.amount,
    )
    reply = await _call(backends, backends.jobs.stub.PayJobWithCoins, request, True)
    return m.engagement_to_http(reply)


@router.post(
    "/api/payments/job-payment",
    status_code=201,
    response_model=m.JobPaymentOut,
    summary="Pay a job through a provider checkout: coins issued into escrow on success (ESC-5)",
    responses=error_responses(400, 401, 403, 404, 409, 502, 503, 504),
)
async def direct_job_payment(
    request: Request,
    body: m.JobPaymentIn,
    principal: Customer,
    backends: BackendsDep,
    idempotency_key: IdempotencyHeader = None,
) -> m.JobPaymentOut:
    """Opens the checkout (metadata `type: job_payment`); the engagement is `open` and the job
    held for it. When the provider confirms the payment, payments issues the coins at the
    configured rate and funds the escrow in one ledger transfer, and the engagement becomes
    `assigned` to the freelancer with its escrow id; a failed or duplicate webhook changes
    nothing. The same `Idempotency-Key` answers the same checkout."""
    check_redirects(request, {"returnUrl": body.returnUrl, "cancelUrl": body.cancelUrl})
    wire = pb.StartJobPaymentRequest(
        request_id=optional_key(idempotency_key) or "",
        job_id=body.jobId,
        freelancer_id=body.freelancerId,
        amount=common_pb2.Money(amount_minor=body.amount, currency=body.currency.upper()),
        return_url=body.returnUrl,
        cancel_url=body.cancelUrl,
        email=body.email or "",
        provider=(body.provider or "").lower(),
    )
    reply = await _call(backends, backends.jobs.stub.StartJobPayment, wire, True)
    return m.job_payment_to_http(reply)
