"""Applications over HTTP (ESC-10, CR-3): applicants apply and follow their applications; a company
lists its applicants for free, opens an applicant's details for one candidate credit (once per
applicant) and accepts or rejects."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from gateway.api import convert
from gateway.api import credit_convert as cc
from gateway.api import credit_models as m
from gateway.api.errors import error_responses, not_found
from gateway.entrypoints.deps import BackendsDep, Company, require_roles
from gateway.service_layer.auth import Principal
from hirepay.jobs.v1 import jobs_service_pb2 as jobs_pb
from hirepay_platform.errors import ErrorKind, RemoteError

router = APIRouter(tags=["applications"])

Applicant = Annotated[Principal, Depends(require_roles("applicant"))]
JobId = Annotated[str, Path(min_length=1, max_length=200)]
ApplicationId = Annotated[str, Path(min_length=1, max_length=200)]


def _hidden(exc: RemoteError, what: str) -> Exception:
    """Others' objects answer 404 like missing ones (SEC-2)."""
    if exc.kind in (ErrorKind.NOT_FOUND, ErrorKind.PERMISSION_DENIED):
        return not_found(what)
    return exc


@router.post(
    "/api/jobs/{job_id}/applications",
    status_code=201,
    response_model=m.ApplicationOut,
    summary="Apply to an active job posting (ESC-10)",
    responses=error_responses(400, 401, 403, 404, 409, 503),
)
async def apply(
    job_id: JobId, body: m.ApplyIn, principal: Applicant, backends: BackendsDep
) -> m.ApplicationOut:
    """The application starts `pending`; one per job and applicant (`409 ALREADY_APPLIED`)."""
    request = jobs_pb.ApplyRequest(
        actor=convert.actor_to_proto(principal),
        job_id=job_id,
        name=body.name,
        email=body.email,
        cover_letter=body.coverLetter,
        resume_url=body.resumeUrl,
    )
    try:
        reply = await backends.jobs.apply(request)
    except RemoteError as exc:
        raise _hidden(exc, "job") from None
    return cc.application_to_http(reply.application)


@router.get(
    "/api/applications/mine",
    response_model=m.ApplicationsOut,
    summary="The caller's applications",
    responses=error_responses(400, 401, 403, 503),
)
async def my_applications(principal: Applicant, backends: BackendsDep) -> m.ApplicationsOut:
    reply = await backends.jobs.list_my_applications(
        jobs_pb.ListMyApplicationsRequest(actor=convert.actor_to_proto(principal))
    )
    return cc.applications_to_http(reply)


@router.get(
    "/api/jobs/{job_id}/applications",
    response_model=m.ApplicationsOut,
    summary="Applications to one of the caller's jobs (free, without details)",
    responses=error_responses(400, 401, 403, 404, 503),
)
async def job_applications(
    job_id: JobId, principal: Company, backends: BackendsDep
) -> m.ApplicationsOut:
    """`applicant` is shown only for applicants the company has paid to view."""
    request = jobs_pb.ListJobApplicationsRequest(
        actor=convert.actor_to_proto(principal), job_id=job_id
    )
    try:
        reply = await backends.jobs.list_job_applications(request)
    except RemoteError as exc:
        raise _hidden(exc, "job") from None
    return cc.applications_to_http(reply)


@router.post(
    "/api/applications/{application_id}/view",
    response_model=m.ViewOut,
    summary="Open an applicant's details: 1 candidate credit, once per applicant (CR-3)",
    responses=error_responses(400, 401, 402, 403, 404, 503),
)
async def view_applicant(
    application_id: ApplicationId, principal: Company, backends: BackendsDep
) -> m.ViewOut:
    """The first view of an applicant by this company takes 1 candidate credit (`charged: true`);
    later views of the same applicant are free. No credit left: `402 INSUFFICIENT_CREDITS` and
    nothing is shown. A POST, not a GET: it spends credits, so no prefetch may trigger it."""
    request = jobs_pb.ViewApplicantRequest(
        actor=convert.actor_to_proto(principal), application_id=application_id
    )
    try:
        reply = await backends.jobs.view_applicant(request)
    except RemoteError as exc:
        raise _hidden(exc, "application") from None
    return m.ViewOut(application=cc.application_to_http(reply.application), charged=reply.charged)


@router.post(
    "/api/applications/{application_id}/decision",
    response_model=m.ApplicationOut,
    summary="Accept or reject a pending application",
    responses=error_responses(400, 401, 403, 404, 409, 503),
)
async def decide(
    application_id: ApplicationId,
    body: m.DecisionIn,
    principal: Company,
    backends: BackendsDep,
) -> m.ApplicationOut:
    request = jobs_pb.DecideApplicationRequest(
        actor=convert.actor_to_proto(principal),
        application_id=application_id,
        accept=body.decision == "accept",
    )
    try:
        reply = await backends.jobs.decide_application(request)
    except RemoteError as exc:
        raise _hidden(exc, "application") from None
    return cc.application_to_http(reply.application)
