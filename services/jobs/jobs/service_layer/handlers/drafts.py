"""Use cases of drafts and of reading postings: create, edit, preview, get and list (PAY-1, PAY-2, PAY-5)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from hirepay_platform import paging
from hirepay_platform.errors import Conflict, ValidationError
from hirepay_platform.ids import new_id
from hirepay_platform.money import Money
from jobs.domain import commands
from jobs.domain.errors import IdempotencyMismatch, JobNotFound
from jobs.domain.model import Job, Transition, validate_fields
from jobs.service_layer import metrics
from jobs.service_layer.access import can_read, load_own, owns_or_admin, require_company
from jobs.service_layer.deps import Deps


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


async def create_draft(cmd: commands.CreateDraft, deps: Deps) -> Job:
    """Save a new validated draft (PAY-1)."""
    require_company(cmd.actor)
    fields = validate_fields(cmd.fields, deps.config.price_list.categories)
    uow = deps.uow
    async with uow:
        now = deps.clock()
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
    metrics.record_transitions(transitions)
    metrics.count(metrics.FUNNEL, "draft_created")
    return job


async def update_draft(cmd: commands.UpdateDraft, deps: Deps) -> Job:
    """Edit a draft, or a job whose payment failed (it is kept as a draft, PAY-6)."""
    require_company(cmd.actor)
    uow = deps.uow
    async with uow:
        job = await load_own(uow, cmd.actor, cmd.job_id, for_update=True)
        merged = job.fields.merged(cmd.fields, cmd.paths)
        job.edit(validate_fields(merged, deps.config.price_list.categories), deps.clock())
        await uow.jobs.save(job)
        await uow.commit()
    return job


async def get_job(cmd: commands.GetJob, deps: Deps) -> Job:
    """One job, if the caller may see it."""
    async with deps.uow as uow:
        job = await uow.jobs.get(cmd.job_id) if cmd.job_id else None
    if job is None or not can_read(cmd.actor, job):
        raise JobNotFound(cmd.job_id)
    return job


async def preview_job(cmd: commands.PreviewJob, deps: Deps) -> Preview:
    """The job as it will be posted, with its fee and the terms to accept (PAY-2)."""
    config = deps.config
    async with deps.uow as uow:
        job = await uow.jobs.get(cmd.job_id) if cmd.job_id else None
    if job is None or not owns_or_admin(cmd.actor, job):
        raise JobNotFound(cmd.job_id)
    fields = validate_fields(job.fields, config.price_list.categories)
    metrics.count(metrics.FUNNEL, "previewed")
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


async def list_active_jobs(cmd: commands.ListActiveJobs, deps: Deps) -> JobPage:
    """The public list: active jobs only, newest first, keyset-paginated (PAY-5)."""
    limit = paging.page_size(cmd.page_size)
    after = _cursor(cmd.page_token)
    async with deps.uow as uow:
        jobs = await uow.jobs.list_active(cmd.category.strip().lower(), after, limit)
    return JobPage(jobs, _next_token(jobs, limit, by_posted=True))


async def list_my_jobs(cmd: commands.ListMyJobs, deps: Deps) -> JobPage:
    """The caller's own jobs in any status, newest first."""
    require_company(cmd.actor)
    limit = paging.page_size(cmd.page_size)
    after = _cursor(cmd.page_token)
    async with deps.uow as uow:
        jobs = await uow.jobs.list_by_company(cmd.actor.user_id, after, limit)
    return JobPage(jobs, _next_token(jobs, limit, by_posted=False))


async def list_transitions(cmd: commands.ListJobTransitions, deps: Deps) -> list[Transition]:
    """A job's audit trail, for its company and admins."""
    async with deps.uow as uow:
        job = await uow.jobs.get(cmd.job_id) if cmd.job_id else None
        if job is None or not owns_or_admin(cmd.actor, job):
            raise JobNotFound(cmd.job_id)
        return await uow.jobs.transitions(job.id)
