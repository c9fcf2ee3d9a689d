"""The marketplace over HTTP (ESC-6..10): customers post jobs for contractors (`/api/marketplace
/jobs`), contractors ask for them (`/api/job-request`), customers send offers whose money is
reserved at once and contractors accept or reject them (`/api/bidding`).

Roles: `customer`, `contractor`, `admin` (reads everything). Another user's job, request or offer
answers 404, like a missing one (SEC-2)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request

from gateway.api import marketplace_convert as mc
from gateway.api import marketplace_models as m
from gateway.api.errors import error_responses, not_found
from gateway.entrypoints.deps import AnyUser, BackendsDep, json_body, require_roles
from gateway.service_layer.auth import Principal
from gateway.service_layer.idempotency import optional_key, scoped_request_id
from hirepay.common.v1 import common_pb2
from hirepay.jobs.v1 import jobs_service_pb2 as jobs_pb
from hirepay_platform.errors import ErrorKind, RemoteError
from hirepay_platform.fingerprint import digest
from hirepay_platform.ids import new_id

router = APIRouter(tags=["marketplace"])

Customer = Annotated[Principal, Depends(require_roles("customer"))]
Contractor = Annotated[Principal, Depends(require_roles("contractor"))]
Id = Annotated[str, Path(min_length=1, max_length=200)]
IdempotencyHeader = Annotated[str | None, Header(alias="Idempotency-Key")]


def _hidden(exc: RemoteError, what: str) -> Exception:
    """Others' objects answer 404 like missing ones (SEC-2)."""
    if exc.kind in (ErrorKind.NOT_FOUND, ErrorKind.PERMISSION_DENIED):
        return not_found(what)
    return exc


def _request_id(principal: Principal, operation: str, key: str | None) -> str:
    """The caller's Idempotency-Key bound to them, or a fresh id (no idempotency asked)."""
    return scoped_request_id(principal.user_id, operation, key) if key else new_id(operation)


# --------------------------------------------------------------------------- jobs


@router.post(
    "/api/marketplace/jobs",
    status_code=201,
    response_model=m.MarketJobOut,
    summary="Post a job for contractors (no posting fee; open at once)",
    responses=error_responses(400, 401, 403, 503),
)
async def post_job(
    body: m.MarketJobIn,
    principal: Customer,
    backends: BackendsDep,
    idempotency_key: IdempotencyHeader = None,
) -> m.MarketJobOut:
    """An optional `Idempotency-Key` makes a retry answer the same job."""
    key = optional_key(idempotency_key)
    request = mc.post_job_to_proto(body, _request_id(principal, "mjob", key))
    reply = await backends.jobs.post_market_job(request)
    return mc.market_job_to_http(reply.job)


@router.get(
    "/api/marketplace/jobs",
    response_model=m.MarketJobsOut,
    summary="Open jobs for contractors, newest first",
    responses=error_responses(400, 401, 403, 503),
)
async def open_jobs(
    principal: Contractor,
    backends: BackendsDep,
    category: Annotated[str, Query(max_length=64)] = "",
    page_size: Annotated[int, Query(alias="pageSize", ge=0, le=200)] = 0,
    page_token: Annotated[str, Query(alias="pageToken", max_length=500)] = "",
) -> m.MarketJobsOut:
    request = jobs_pb.ListOpenMarketJobsRequest(
        page=common_pb2.PageRequest(page_size=page_size, page_token=page_token),
        category=category,
    )
    return mc.market_jobs_to_http(await backends.jobs.list_open_market_jobs(request))


@router.get(
    "/api/marketplace/jobs/mine",
    response_model=m.MarketJobsOut,
    summary="The caller's own marketplace jobs, newest first",
    responses=error_responses(400, 401, 403, 503),
)
async def my_jobs(
    principal: Customer,
    backends: BackendsDep,
    page_size: Annotated[int, Query(alias="pageSize", ge=0, le=200)] = 0,
    page_token: Annotated[str, Query(alias="pageToken", max_length=500)] = "",
) -> m.MarketJobsOut:
    request = jobs_pb.ListMyMarketJobsRequest(
        page=common_pb2.PageRequest(page_size=page_size, page_token=page_token)
    )
    return mc.market_jobs_to_http(await backends.jobs.list_my_market_jobs(request))


@router.get(
    "/api/marketplace/jobs/{job_id}",
    response_model=m.MarketJobOut,
    summary="One marketplace job (its customer, its contractor, admins; open jobs: contractors)",
    responses=error_responses(400, 401, 404, 503),
)
async def get_job(job_id: Id, principal: AnyUser, backends: BackendsDep) -> m.MarketJobOut:
    try:
        reply = await backends.jobs.get_market_job(jobs_pb.GetMarketJobRequest(job_id=job_id))
    except RemoteError as exc:
        raise _hidden(exc, "job") from None
    return mc.market_job_to_http(reply.job)


# --------------------------------------------------------------------------- job requests


@router.post(
    "/api/job-request",
    status_code=201,
    response_model=m.JobRequestOut,
    summary="Ask for an open job (ESC-10): pending until the customer decides",
    responses=error_responses(400, 401, 403, 404, 409, 503),
)
async def request_job(
    body: m.JobRequestIn, principal: Contractor, backends: BackendsDep
) -> m.JobRequestOut:
    """One request per job and contractor (`409` with `ALREADY_REQUESTED` otherwise)."""
    request = jobs_pb.RequestJobRequest(job_id=body.jobId, message=body.message)
    try:
        reply = await backends.jobs.request_job(request)
    except RemoteError as exc:
        raise _hidden(exc, "job") from None
    return mc.job_request_to_http(reply.job_request)


@router.get(
    "/api/job-request",
    response_model=m.JobRequestsOut,
    summary="Requests for one of the caller's jobs (`jobId`), or the calling contractor's own",
    responses=error_responses(400, 401, 403, 404, 503),
)
async def list_requests(
    principal: AnyUser,
    backends: BackendsDep,
    job_id: Annotated[str, Query(alias="jobId", max_length=200)] = "",
) -> m.JobRequestsOut:
    try:
        reply = await backends.jobs.list_job_requests(jobs_pb.ListJobRequestsRequest(job_id=job_id))
    except RemoteError as exc:
        raise _hidden(exc, "job") from None
    return m.JobRequestsOut(jobRequests=[mc.job_request_to_http(r) for r in reply.job_requests])


@router.post(
    "/api/job-request/{request_id}/decision",
    response_model=m.JobRequestOut,
    summary="Accept or reject a pending request for one of the caller's jobs",
    responses=error_responses(400, 401, 403, 404, 409, 503),
)
async def decide_request(
    request_id: Id, body: m.DecisionIn, principal: Customer, backends: BackendsDep
) -> m.JobRequestOut:
    request = jobs_pb.DecideJobRequestRequest(
        job_request_id=request_id, accept=body.decision == "accept"
    )
    try:
        reply = await backends.jobs.decide_job_request(request)
    except RemoteError as exc:
        raise _hidden(exc, "job request") from None
    return mc.job_request_to_http(reply.job_request)


# --------------------------------------------------------------------------- offers


@router.post(
    "/api/bidding",
    status_code=201,
    response_model=m.OfferResultOut,
    summary="Send an offer to a contractor for an open job; its money is reserved at once",
    responses=error_responses(400, 401, 402, 403, 404, 409, 422, 502, 503, 504),
)
async def send_offer(
    request: Request,
    body: m.OfferIn,
    principal: Customer,
    backends: BackendsDep,
    idempotency_key: IdempotencyHeader = None,
) -> m.OfferResultOut:
    """Card: `paymentMethod` is a provider token (pm_...); the amount is authorized, not captured,
    until the contractor accepts. Coins: the amount (in COIN) is held on the caller's coin wallet
    (`402 INSUFFICIENT_FUNDS` when short). Several offers may be open on one job; an offer not
    accepted within its validity expires and is released. An optional `Idempotency-Key` makes a
    retry answer the same offer (the same key with another body: `409 IDEMPOTENCY_MISMATCH`)."""
    key = optional_key(idempotency_key)
    fingerprint = digest(await json_body(request))
    proto = mc.offer_to_proto(body, _request_id(principal, "offer", key), fingerprint)
    try:
        reply = await backends.jobs.send_offer(proto)
    except RemoteError as exc:
        raise _hidden(exc, "job") from None
    return mc.offer_result_to_http(reply)


@router.get(
    "/api/bidding",
    response_model=m.OffersOut,
    summary="Offers on one of the caller's jobs (`jobId`), else the caller's sent or received",
    responses=error_responses(400, 401, 403, 404, 503),
)
async def list_offers(
    principal: AnyUser,
    backends: BackendsDep,
    job_id: Annotated[str, Query(alias="jobId", max_length=200)] = "",
) -> m.OffersOut:
    try:
        reply = await backends.jobs.list_offers(jobs_pb.ListOffersRequest(job_id=job_id))
    except RemoteError as exc:
        raise _hidden(exc, "job") from None
    return m.OffersOut(offers=[mc.offer_to_http(o) for o in reply.offers])


@router.get(
    "/api/bidding/{offer_id}",
    response_model=m.OfferResultOut,
    summary="One offer (its customer, its contractor, admins)",
    responses=error_responses(400, 401, 404, 503),
)
async def get_offer(offer_id: Id, principal: AnyUser, backends: BackendsDep) -> m.OfferResultOut:
    try:
        reply = await backends.jobs.get_offer(jobs_pb.GetOfferRequest(offer_id=offer_id))
    except RemoteError as exc:
        raise _hidden(exc, "offer") from None
    return mc.offer_result_to_http(reply)


@router.post(
    "/api/bidding/{offer_id}/accept",
    response_model=m.OfferResultOut,
    summary="Accept an offer made to the caller: captured, 10% fee, 90% in escrow, job assigned",
    responses=error_responses(400, 401, 403, 404, 409, 502, 503, 504),
)
async def accept_offer(
    offer_id: Id, principal: Contractor, backends: BackendsDep
) -> m.OfferResultOut:
    """Exactly one acceptance wins a job: another one at the same time gets `409`
    (`JOB_ALREADY_TAKEN`) and its offer is rejected and released when the winner is assigned.
    Every other offer on the job is rejected and its money released. An acceptance interrupted
    on our side is finished by the service (`state: accepting` until then)."""
    try:
        reply = await backends.jobs.accept_offer(jobs_pb.AcceptOfferRequest(offer_id=offer_id))
    except RemoteError as exc:
        raise _hidden(exc, "offer") from None
    return mc.offer_result_to_http(reply)


@router.post(
    "/api/bidding/{offer_id}/reject",
    response_model=m.OfferResultOut,
    summary="Reject an offer made to the caller; its money is released",
    responses=error_responses(400, 401, 403, 404, 409, 503),
)
async def reject_offer(
    offer_id: Id, principal: Contractor, backends: BackendsDep
) -> m.OfferResultOut:
    try:
        reply = await backends.jobs.reject_offer(jobs_pb.RejectOfferRequest(offer_id=offer_id))
    except RemoteError as exc:
        raise _hidden(exc, "offer") from None
    return mc.offer_result_to_http(reply)


@router.post(
    "/api/bidding/{offer_id}/withdraw",
    response_model=m.OfferResultOut,
    summary="Withdraw an offer the caller sent; its money is released",
    responses=error_responses(400, 401, 403, 404, 409, 503),
)
async def withdraw_offer(
    offer_id: Id, principal: Customer, backends: BackendsDep
) -> m.OfferResultOut:
    try:
        reply = await backends.jobs.withdraw_offer(jobs_pb.WithdrawOfferRequest(offer_id=offer_id))
    except RemoteError as exc:
        raise _hidden(exc, "offer") from None
    return mc.offer_result_to_http(reply)
