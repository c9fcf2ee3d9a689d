"""Pay-to-post over HTTP: drafts, preview, the public list, create-with-payment, cancel, audit."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from pydantic import ValidationError

from gateway.adapters.backends import Backends
from gateway.adapters.ratelimit import PostingFailed, SharedPostingLimiter
from gateway.api import convert, models
from gateway.api.backend_errors import api_error_from_reason, api_error_from_remote
from gateway.api.errors import ApiError, error_responses, not_found, validation_failed
from gateway.entrypoints.deps import (
    NO_JSON_BODY,
    AnyUser,
    BackendsDep,
    Company,
    LimiterDep,
    OptionalUser,
    accepted_caller,
    check_redirects,
    first_headers,
    header_text,
    json_body,
    json_model_body,
    roles_allowed,
)
from gateway.entrypoints.direct_routes import DirectRoute, JsonAnswer
from gateway.entrypoints.observability import (
    CWP_FAILED,
    CWP_STARTED,
    CWP_SUCCEEDED,
    FUNNEL,
    RATE_LIMITED,
)
from gateway.service_layer.auth import Principal
from gateway.service_layer.idempotency import optional_key, require_key, scoped_request_id
from hirepay.common.v1 import common_pb2
from hirepay.jobs.v1 import jobs_service_pb2 as jobs_pb
from hirepay_platform.errors import ErrorKind, RemoteError
from hirepay_platform.fingerprint import digest
from hirepay_platform.ids import new_id
from hirepay_platform.metrics import child, count, incrementer
from hirepay_platform.reasons import FailureReason

router = APIRouter(prefix="/api/jobs", tags=["jobs"])

JobId = Annotated[str, Path(min_length=1, max_length=200)]
IDEMPOTENCY_KEY = "Idempotency-Key"
IdempotencyHeader = Annotated[str | None, Header(alias=IDEMPOTENCY_KEY)]
PageSize = Annotated[int | None, Query(ge=1, le=200, description="Items per page (max 200).")]
PageToken = Annotated[
    str | None,
    Query(
        max_length=2000,
        pattern=r"^[A-Za-z0-9_-]*$",
        description="next_page_token of the last page (opaque, URL-safe base64).",
    ),
]

# A payment method is the provider's opaque token: its format is the provider adapter's business
# (payments); here only its shape (one word of token characters) and never a card number (API-7).
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_.:-]{1,255}")
_CARD_NUMBER = re.compile(r"[\d\s-]{12,23}")


async def _load_owned_job(backends: Backends, principal: Principal, job_id: str) -> jobs_pb.Job:
    """The job if the caller owns it (or is admin); otherwise 404, existence not revealed (SEC-2)."""
    try:
        response = await backends.jobs.get_job(
            jobs_pb.GetJobRequest(actor=convert.actor_to_proto(principal), job_id=job_id)
        )
    except RemoteError as exc:
        if exc.kind in (ErrorKind.NOT_FOUND, ErrorKind.PERMISSION_DENIED):
            raise not_found("job") from None
        raise
    if not principal.owns(response.job.company_id):
        raise not_found("job")
    return response.job


def _request_id(principal: Principal, operation: str, key: str | None) -> str:
    """The caller's Idempotency-Key bound to them, or a fresh id (enough for the client library's
    own retries of one call; a client that retries the HTTP request should send a key)."""
    return scoped_request_id(principal.user_id, operation, key) if key else new_id(operation)


@router.post(
    "/drafts",
    status_code=201,
    response_model=models.JobOut,
    summary="Save a job draft (PAY-1)",
    responses=error_responses(400, 401, 403, 503, 504),
)
async def create_draft(
    body: models.JobFieldsIn,
    principal: Company,
    backends: BackendsDep,
    idempotency_key: IdempotencyHeader = None,
) -> models.JobOut:
    """Saves a draft; the jobs service answers field-level errors (400 VALIDATION_FAILED)."""
    key = optional_key(idempotency_key)
    response = await backends.jobs.create_draft(
        jobs_pb.CreateDraftRequest(
            request_id=_request_id(principal, "draft", key),
            actor=convert.actor_to_proto(principal),
            fields=convert.job_fields_to_proto(body),
        )
    )
    count(FUNNEL, "draft_saved")
    return convert.job_to_http(response.job)


@router.patch(
    "/drafts/{job_id}",
    response_model=models.JobOut,
    summary="Edit a draft (or a payment_failed job)",
    responses=error_responses(400, 401, 403, 404, 409, 503, 504),
)
async def update_draft(
    job_id: JobId,
    body: models.JobPatchIn,
    principal: Company,
    backends: BackendsDep,
    idempotency_key: IdempotencyHeader = None,
) -> models.JobOut:
    """Replaces exactly the fields sent (JSON merge semantics per top-level field)."""
    if not body.model_fields_set:
        raise validation_failed({"body": "no fields to update"})
    key = optional_key(idempotency_key)
    await _load_owned_job(backends, principal, job_id)
    response = await backends.jobs.update_draft(
        jobs_pb.UpdateDraftRequest(
            request_id=_request_id(principal, "update", key),
            actor=convert.actor_to_proto(principal),
            job_id=job_id,
            fields=convert.job_fields_to_proto(body),
            update_mask=convert.update_mask_for(body),
        )
    )
    return convert.job_to_http(response.job)


@router.get(
    "",
    response_model=models.JobListOut,
    summary="Public list of active jobs, newest first",
    responses=error_responses(400, 503, 504),
)
async def list_active_jobs(
    principal: OptionalUser,
    backends: BackendsDep,
    page_size: PageSize = None,
    page_token: PageToken = None,
    category: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
) -> models.JobListOut:
    """Only `active` jobs are listed (PAY-5); no token needed."""
    response = await backends.jobs.list_active_jobs(
        jobs_pb.ListActiveJobsRequest(
            page=common_pb2.PageRequest(page_size=page_size or 0, page_token=page_token or ""),
            category=category or "",
        )
    )
    # Defence in depth: whatever the backend answers, the public list shows active jobs only.
    visible = [j for j in response.jobs if j.status == jobs_pb.Job.ACTIVE]
    del response.jobs[:]
    response.jobs.extend(visible)
    return convert.job_list_to_http(response, principal)


@router.get(
    "/mine",
    response_model=models.JobListOut,
    summary="The caller's own jobs, any status",
    responses=error_responses(400, 401, 403, 503, 504),
)
async def list_my_jobs(
    principal: Company,
    backends: BackendsDep,
    page_size: PageSize = None,
    page_token: PageToken = None,
) -> models.JobListOut:
    response = await backends.jobs.list_my_jobs(
        jobs_pb.ListMyJobsRequest(
            actor=convert.actor_to_proto(principal),
            page=common_pb2.PageRequest(page_size=page_size or 0, page_token=page_token or ""),
        )
    )
    mine = [j for j in response.jobs if principal.owns(j.company_id)]
    del response.jobs[:]
    response.jobs.extend(mine)
    return convert.job_list_to_http(response, principal)


@router.post(
    "/create-with-payment",
    status_code=201,
    response_model=models.CreateWithPaymentOut,
    summary="Post a job and pay for it in one step (PAY-4)",
    responses={
        202: {
            "model": models.CreateWithPaymentOut,
            "description": "pending_payment: follow `next_action` (bank transfer, 3-D Secure, checkout)",
        },
        **error_responses(400, 401, 402, 403, 404, 409, 422, 429, 502, 503, 504),
    },
)
async def create_with_payment(
    request: Request,
    body: models.CreateWithPaymentIn,
    principal: Company,
    limiter: LimiterDep,
    idempotency_key: IdempotencyHeader = None,
) -> Response:
    """Runs the pay-to-post saga: no job goes live without money.

    `Idempotency-Key` is required (1-255 printable characters, scoped to the caller): a repeat with
    the same body answers the first response again (header `Idempotent-Replayed: true`), the same key
    with another body is refused (422), a twin still running gets 409. Card data never reaches
    Hirepay: send a provider token (`pm_...`). Rate limited per user (`RateLimit` headers).
    """
    parsed_body = await json_body(request)
    return await _post_with_payment(request, body, parsed_body, principal, limiter, idempotency_key)


async def create_with_payment_directly(request: Request) -> Response | None:
    """create_with_payment for a request that FastAPI would hand to it (JSON of the model, a
    company's or an admin's good token), without FastAPI's per-request machinery; None for any
    other request, which FastAPI's route then answers (direct_routes.py)."""
    headers = first_headers(request)
    parsed = json_model_body(request, header_text(headers, b"content-type"))
    if parsed is NO_JSON_BODY:
        return None
    principal = accepted_caller(request, _POSTERS, header_text(headers, b"authorization"))
    if principal is None:
        return None
    try:
        body = models.CreateWithPaymentIn.model_validate(parsed)
    except ValidationError:
        return None
    limiter: SharedPostingLimiter = request.scope["app"].state.limiter
    return await _post_with_payment(
        request, body, parsed, principal, limiter, header_text(headers, b"idempotency-key")
    )


# Who may post (the Company dependency's roles).
_POSTERS = roles_allowed("company")

# The posting is answered directly when it is well formed (issue 13).
DIRECT = (DirectRoute(create_with_payment, create_with_payment_directly),)


async def _post_with_payment(
    request: Request,
    body: models.CreateWithPaymentIn,
    parsed_body: Any,
    principal: Principal,
    limiter: SharedPostingLimiter,
    idempotency_key: str | None,
) -> Response:
    """The posting: what the gateway checks, then the saga in jobs, then the answer. The request
    fingerprint is the digest of `parsed_body`, the JSON that `body` was validated from."""
    key = require_key(idempotency_key)
    _check_subject_and_payment(body)
    check_redirects(
        request,
        {
            "payment.return_url": body.payment.return_url,
            "payment.cancel_url": body.payment.cancel_url,
        },
    )
    # Jobs spends one attempt from the user's bucket (the signed actor, shared by every gateway
    # replica) before anything else, in the same call.
    try:
        response, decision = await limiter.create_job_with_payment(
            convert.create_with_payment_to_proto(
                body,
                principal=principal,
                idempotency_key=key,
                request_fingerprint=digest(parsed_body),
            )
        )
    except PostingFailed as failed:
        if failed.decision is not None:
            request.state.response_headers = failed.decision.headers()
            if not failed.decision.allowed:
                count(RATE_LIMITED, limiter.policy)
                raise ApiError(
                    429,
                    "RATE_LIMITED",
                    "Too many posting attempts; retry after the time in Retry-After",
                    retry=True,
                ) from None
        count(CWP_STARTED)
        count(FUNNEL, "payment_started")
        mapped = api_error_from_remote(failed.error)
        count(CWP_FAILED, mapped.error)
        count(FUNNEL, "failed")
        raise mapped from None
    _STARTED()
    _PAYMENT_STARTED()
    if response.job.status == jobs_pb.Job.PAYMENT_FAILED:
        # A saga that ended failed without an error (e.g. a replayed failed twin): same contract.
        request.state.response_headers = decision.headers()
        mapped = api_error_from_reason(
            response.job.failure_reason or FailureReason.PAYMENT_DECLINED
        )
        count(CWP_FAILED, mapped.error)
        count(FUNNEL, "failed")
        raise mapped
    status, out = convert.create_with_payment_to_http(response, body.payment.method)
    for succeeded in _SUCCEEDED[(status, response.replayed)]:
        succeeded()
    headers = decision.raw_headers()
    if response.replayed:
        headers.append(_REPLAYED)
    # pydantic writes the JSON itself (one pass in its core), not a dict for json.dumps to walk.
    return JsonAnswer(out.model_dump_json().encode(), status, headers)


_REPLAYED = (b"idempotent-replayed", b"true")


# A posting's counts on its way to an answer, each one call, their series made at start-up: a
# count() is two calls more each (issue 13). The answered ones by (status, replayed): the funnel's
# step (201 active, 202 pending_payment) and the succeeded counter's labels.
_STARTED = incrementer(CWP_STARTED)
_PAYMENT_STARTED = incrementer(child(FUNNEL, "payment_started"))
_SUCCEEDED = {
    (status, replayed): (
        incrementer(child(FUNNEL, step)),
        incrementer(child(CWP_SUCCEEDED, step, str(replayed).lower())),
    )
    for status, step in ((201, "active"), (202, "pending_payment"))
    for replayed in (False, True)
}


def _check_subject_and_payment(body: models.CreateWithPaymentIn) -> None:
    """What the gateway can refuse before any money moves (the jobs service checks the rest)."""
    if (body.job is None) == (body.draft_id is None):
        raise validation_failed({"draft_id": "give exactly one of draft_id or job"})
    pay = body.payment
    token = pay.payment_method or ""
    if pay.method in ("credits", "checkout"):
        if token:
            raise validation_failed(
                {"payment.payment_method": f"not used with method {pay.method}"}
            )
        if pay.method == "checkout" and pay.return_url is None:
            # Payments refuses it too, but only after jobs has recorded the attempt: the job
            # would be left a payment_failed draft for a mistake caught before any money moved.
            raise validation_failed({"payment.return_url": "required for checkout"})
        return
    # card (required) and bank_transfer (optional, e.g. pm_bank_transfer): a provider token only.
    if not token:
        if pay.method == "card":
            raise ApiError(
                400,
                FailureReason.INVALID_PAYMENT_DETAILS,
                "A card payment needs the provider's payment method token",
                fields={"payment.payment_method": "required for card"},
            )
        return
    if _CARD_NUMBER.fullmatch(token) or not _TOKEN_SHAPE.fullmatch(token):
        problem = (
            "never send a card number; tokenize it with the provider"
            if _CARD_NUMBER.fullmatch(token)
            else "must be a provider payment method token"
        )
        raise ApiError(
            400,
            FailureReason.INVALID_PAYMENT_DETAILS,
            "The payment method is not a provider token",
            fields={"payment.payment_method": problem},
        )


@router.get(
    "/{job_id}",
    response_model=models.JobOut,
    summary="Read one job",
    responses=error_responses(401, 404, 503, 504),
)
async def get_job(job_id: JobId, principal: OptionalUser, backends: BackendsDep) -> models.JobOut:
    """Anyone may read an active job; other statuses only its owner or an admin (others: 404).
    Payment fields are shown only to the owner and admins."""
    try:
        response = await backends.jobs.get_job(
            jobs_pb.GetJobRequest(actor=convert.actor_to_proto(principal), job_id=job_id)
        )
    except RemoteError as exc:
        if exc.kind in (ErrorKind.NOT_FOUND, ErrorKind.PERMISSION_DENIED):
            raise not_found("job") from None
        raise
    if not convert.job_visible_to(response.job, principal):
        raise not_found("job")
    return convert.job_for_viewer(response.job, principal)


@router.get(
    "/{job_id}/preview",
    response_model=models.PreviewOut,
    summary="Preview a draft with its fee and terms (PAY-2)",
    responses=error_responses(401, 403, 404, 503, 504),
)
async def preview_job(
    job_id: JobId, principal: Company, backends: BackendsDep
) -> models.PreviewOut:
    await _load_owned_job(backends, principal, job_id)
    response = await backends.jobs.preview_job(
        jobs_pb.PreviewJobRequest(actor=convert.actor_to_proto(principal), job_id=job_id)
    )
    count(FUNNEL, "preview")
    return convert.preview_to_http(response)


@router.post(
    "/{job_id}/cancel",
    response_model=models.JobOut,
    summary="Cancel a posting (refunded per policy)",
    responses=error_responses(400, 401, 403, 404, 409, 502, 503, 504),
)
async def cancel_job(
    job_id: JobId,
    principal: Company,
    backends: BackendsDep,
    body: models.CancelJobIn | None = None,
    idempotency_key: IdempotencyHeader = None,
) -> models.JobOut:
    key = optional_key(idempotency_key)
    await _load_owned_job(backends, principal, job_id)
    response = await backends.jobs.cancel_job(
        jobs_pb.CancelJobRequest(
            request_id=_request_id(principal, "cancel", key),
            actor=convert.actor_to_proto(principal),
            job_id=job_id,
            reason=(body.reason if body else "") or "cancelled by the company",
        )
    )
    return convert.job_to_http(response.job)


@router.get(
    "/{job_id}/transitions",
    response_model=models.TransitionListOut,
    summary="A job's recorded status changes (PAY-15)",
    responses=error_responses(401, 403, 404, 503, 504),
)
async def list_transitions(
    job_id: JobId, principal: AnyUser, backends: BackendsDep
) -> models.TransitionListOut:
    await _load_owned_job(backends, principal, job_id)
    response = await backends.jobs.list_job_transitions(
        jobs_pb.ListJobTransitionsRequest(actor=convert.actor_to_proto(principal), job_id=job_id)
    )
    return convert.transitions_to_http(response)
