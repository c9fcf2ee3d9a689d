"""Use cases of job drafts and postings: each handler is one local transaction through the UoW."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from hirepay_platform import paging
from hirepay_platform.errors import Conflict, ValidationError
from hirepay_platform.ids import new_id
from hirepay_platform.money import Money
from jobs import metrics
from jobs.domain import commands
from jobs.domain.commands import Actor
from jobs.domain.errors import IdempotencyMismatch, JobNotFound, NotAllowed
from jobs.domain.model import Job, JobStatus, Transition, validate_fields
from jobs.domain.saga import SagaState
from jobs.service_layer.config import JobsConfig
from jobs.service_layer.ports import JobsUnitOfWork


@dataclass(frozen=True, slots=True)
class Preview:
    """A job as it will be posted, with what posting costs."""

    job: Job
    fee: Money
    fee_credits: int
    terms_version: str
    posting_days: int


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[Job]
    next_page_token: str


def require_company(actor: Actor) -> None:
    """Only companies create and pay for postings."""
    if not actor.is_company:
        raise NotAllowed("only a company may manage job postings", metadata={"role": actor.role})


def can_read(actor: Actor, job: Job) -> bool:
    """Active jobs are public; others only for their company and for admins (SEC-2)."""
    return job.status is JobStatus.ACTIVE or actor.is_admin or job.company_id == actor.user_id


async def load_own(uow: JobsUnitOfWork, actor: Actor, job_id: str, *, for_update: bool) -> Job:
    """The caller's own job; another company's job is reported as absent (no existence leak)."""
    job = await uow.jobs.get(job_id, for_update=for_update) if job_id else None
    if job is None or job.company_id != actor.user_id:
        raise JobNotFound(job_id)
    return job


def record_transitions(transitions: list[Transition]) -> None:
    """Count transitions once they are committed."""
    for t in transitions:
        metrics.TRANSITIONS.labels(t.from_status.value if t.from_status else "", t.to_status).inc()


async def create_draft(cmd: commands.CreateDraft, uow: JobsUnitOfWork, config: JobsConfig) -> Job:
    """Save a new validated draft (PAY-1)."""
    require_company(cmd.actor)
    fields = validate_fields(cmd.fields, config.price_list.categories)
    async with uow:
        now = uow.clock()
        job = Job.new_draft(
            new_id("job"),
            cmd.actor.user_id,
            fields,
            cmd.actor.name,
            now,
            create_request_id=cmd.request_id.strip(),
        )
        transitions = list(job.pending)
        if not job.create_request_id:
            await uow.jobs.add(job)
        elif not await uow.jobs.add_if_absent(job):
            # A retry of a create that happened (AIP-155): the same draft, unless the body differs.
            existing = await uow.jobs.get_by_create_request(job.company_id, job.create_request_id)
            if existing is None:
                raise Conflict("the request id is being claimed; retry")
            if existing.fields != fields:
                raise IdempotencyMismatch(
                    "this request id was used with different fields",
                    metadata={"request_id": job.create_request_id, "job_id": existing.id},
                )
            return existing
        await uow.commit()
    record_transitions(transitions)
    metrics.FUNNEL.labels("draft_created").inc()
    return job


async def update_draft(cmd: commands.UpdateDraft, uow: JobsUnitOfWork, config: JobsConfig) -> Job:
    """Edit a draft, or a job whose payment failed (it is kept as a draft, PAY-6)."""
    require_company(cmd.actor)
    async with uow:
        job = await load_own(uow, cmd.actor, cmd.job_id, for_update=True)
        merged = job.fields.merged(cmd.fields, cmd.paths)
        job.edit(validate_fields(merged, config.price_list.categories), uow.clock())
        await uow.jobs.save(job)
        await uow.commit()
    return job


async def get_job(cmd: commands.GetJob, uow: JobsUnitOfWork) -> Job:
    """One job, if the caller may see it."""
    async with uow:
        job = await uow.jobs.get(cmd.job_id) if cmd.job_id else None
    if job is None or not can_read(cmd.actor, job):
        raise JobNotFound(cmd.job_id)
    return job


async def preview_job(cmd: commands.PreviewJob, uow: JobsUnitOfWork, config: JobsConfig) -> Preview:
    """The job as it will be posted, with its fee and the terms to accept (PAY-2)."""
    async with uow:
        job = await uow.jobs.get(cmd.job_id) if cmd.job_id else None
    if job is None or not (cmd.actor.is_admin or job.company_id == cmd.actor.user_id):
        raise JobNotFound(cmd.job_id)
    fields = validate_fields(job.fields, config.price_list.categories)
    metrics.FUNNEL.labels("previewed").inc()
    return Preview(
        job=job,
        fee=config.price_list.fee(fields.category),
        fee_credits=config.price_list.credits_fee,
        terms_version=config.terms_version,
        posting_days=config.posting_days,
    )


def _cursor(token: str) -> tuple[datetime, str] | None:
    """Decode a keyset cursor (timestamp, id) from a page token."""
    raw = paging.decode_token(token)
    if raw is None:
        return None
    try:
        return datetime.fromisoformat(str(raw["t"])), str(raw["i"])
    except (KeyError, ValueError) as exc:
        raise ValidationError("page_token is invalid", fields={"page_token": "invalid"}) from exc


def _next_token(jobs: list[Job], limit: int, by_posted: bool) -> str:
    if len(jobs) < limit:
        return ""
    last = jobs[-1]
    at = last.posted_at if by_posted else last.created_at
    assert at is not None
    return paging.encode_token({"t": at.isoformat(), "i": last.id})


async def list_active_jobs(cmd: commands.ListActiveJobs, uow: JobsUnitOfWork) -> JobPage:
    """The public list: active jobs only, newest first, keyset-paginated (PAY-5)."""
    limit = paging.page_size(cmd.page_size)
    after = _cursor(cmd.page_token)
    async with uow:
        jobs = await uow.jobs.list_active(cmd.category.strip().lower(), after, limit)
    return JobPage(jobs, _next_token(jobs, limit, by_posted=True))


async def list_my_jobs(cmd: commands.ListMyJobs, uow: JobsUnitOfWork) -> JobPage:
    """The caller's own jobs in any status, newest first."""
    require_company(cmd.actor)
    limit = paging.page_size(cmd.page_size)
    after = _cursor(cmd.page_token)
    async with uow:
        jobs = await uow.jobs.list_by_company(cmd.actor.user_id, after, limit)
    return JobPage(jobs, _next_token(jobs, limit, by_posted=False))


async def list_transitions(
    cmd: commands.ListJobTransitions, uow: JobsUnitOfWork
) -> list[Transition]:
    """A job's audit trail, for its company and admins."""
    async with uow:
        job = await uow.jobs.get(cmd.job_id) if cmd.job_id else None
        if job is None or not (cmd.actor.is_admin or job.company_id == cmd.actor.user_id):
            raise JobNotFound(cmd.job_id)
        return await uow.jobs.transitions(job.id)


async def cancel_job(
    cmd: commands.CancelJob, uow: JobsUnitOfWork, config: JobsConfig
) -> tuple[Job, str]:
    """Cancel a draft or a posting; an active posting is refunded per the policy (PAY-13).

    The refund itself is a saga step (REFUNDING) committed with the cancellation, so it is retried
    until it succeeds; returns the job and the id of the saga to drive ("" when nothing to refund).
    """
    if not (cmd.actor.is_company or cmd.actor.is_admin):
        raise NotAllowed("only the owning company may cancel a job")
    async with uow:
        now = uow.clock()
        if cmd.actor.is_admin:
            job = await uow.jobs.get(cmd.job_id, for_update=True) if cmd.job_id else None
            if job is None:
                raise JobNotFound(cmd.job_id)
        else:
            job = await load_own(uow, cmd.actor, cmd.job_id, for_update=True)
        if job.status is JobStatus.CANCELLED:
            return job, ""  # cancelling a cancelled job changes nothing (a retried request)
        was_active = job.status is JobStatus.ACTIVE
        reason = cmd.reason.strip() or "cancelled by the company"
        job.transition(JobStatus.CANCELLED, actor=cmd.actor.name, reason=reason, now=now)
        transitions = list(job.pending)
        saga_to_drive = ""
        if was_active and job.saga_id:
            saga = await uow.sagas.get(job.saga_id, for_update=True)
            amount = config.refund_policy.refund_amount(
                job.payment_amount_minor, job.posted_at, now
            )
            if saga is not None and amount > 0:
                saga.refund_amount_minor = amount
                saga.refund_reason = "requested_by_customer"
                if saga.state is SagaState.COMPLETED:
                    saga.state = SagaState.REFUNDING
                    saga.finished_at = None
                    saga.next_attempt_at = now
                saga.updated_at = now
                await uow.sagas.save(saga)
                await uow.sagas.log(saga.id, "refund_requested", f"{amount} on cancel", now)
                saga_to_drive = saga.id
        await uow.jobs.save(job)
        await uow.commit()
    record_transitions(transitions)
    return job, saga_to_drive


async def expire_due(uow: JobsUnitOfWork, limit: int = 100) -> int:
    """Expire active postings past their period (PAY-13); safe with several replicas (SKIP LOCKED)."""
    async with uow:
        now = uow.clock()
        jobs = await uow.jobs.lock_expired(now, limit)
        transitions: list[Transition] = []
        for job in jobs:
            job.transition(
                JobStatus.EXPIRED, actor="system", reason="posting period ended", now=now
            )
            transitions.extend(job.pending)
            await uow.jobs.save(job)
        await uow.commit()
    record_transitions(transitions)
    metrics.EXPIRED_JOBS.inc(len(jobs))
    return len(jobs)
