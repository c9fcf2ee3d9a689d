"""Marketplace jobs and job requests (ESC-10): a customer posts work for contractors (no posting
fee), contractors list the open jobs and ask for one; the customer lists and decides."""

from __future__ import annotations

from dataclasses import dataclass

from hirepay_platform import paging
from hirepay_platform.ids import new_id
from jobs.domain import commands
from jobs.domain.marketplace import (
    AlreadyRequested,
    JobRequest,
    JobRequestNotFound,
    JobRequestStatus,
    MarketJob,
    MarketJobFields,
    MarketJobNotFound,
    MarketJobStatus,
    validate_message,
)
from jobs.service_layer.deps import Deps
from jobs.service_layer.handlers.drafts import _cursor
from jobs.service_layer.marketplace.access import (
    can_read_job,
    require_contractor,
    require_customer,
)
from jobs.service_layer.ports import JobsUnitOfWork

LIST_LIMIT = 200


@dataclass(frozen=True, slots=True)
class MarketJobPage:
    jobs: list[MarketJob]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class JobRequestView:
    request: JobRequest
    job_title: str


def _next_token(jobs: list[MarketJob], limit: int) -> str:
    if len(jobs) < limit:
        return ""
    last = jobs[-1]
    return paging.encode_token({"t": last.created_at.isoformat(), "i": last.id})


async def post_market_job(cmd: commands.PostMarketJob, deps: Deps) -> MarketJob:
    """Post a job for contractors: open at once (no posting fee); idempotent on request_id."""
    require_customer(cmd.actor)
    fields = MarketJobFields(
        cmd.title, cmd.description, cmd.category, cmd.budget_minor, cmd.currency
    ).validate()
    now = deps.clock()
    job = MarketJob(new_id("mjob"), cmd.actor.user_id, fields, MarketJobStatus.OPEN, now, now)
    async with deps.uow as uow:
        stored = await uow.market_jobs.add_if_absent(job, cmd.request_id[:255])
        await uow.commit()
    return stored


async def get_market_job(cmd: commands.GetMarketJob, deps: Deps) -> MarketJob:
    async with deps.uow as uow:
        job = await uow.market_jobs.get(cmd.job_id) if cmd.job_id else None
    if job is None or not can_read_job(cmd.actor, job):
        raise MarketJobNotFound(cmd.job_id)
    return job


async def list_market_jobs(cmd: commands.ListMarketJobs, deps: Deps) -> MarketJobPage:
    """A customer's own jobs (`mine`), or the open jobs for contractors and admins."""
    limit = paging.page_size(cmd.page_size)
    after = _cursor(cmd.page_token)
    async with deps.uow as uow:
        if cmd.mine:
            require_customer(cmd.actor)
            jobs = await uow.market_jobs.list_by_customer(cmd.actor.user_id, after, limit)
        else:
            if not cmd.actor.is_admin:
                require_contractor(cmd.actor)
            jobs = await uow.market_jobs.list_open(cmd.category.strip().lower(), after, limit)
    return MarketJobPage(jobs, _next_token(jobs, limit))


async def request_job(cmd: commands.RequestJob, deps: Deps) -> JobRequestView:
    """A contractor asks for an open job, once per job (AlreadyRequested names the first)."""
    require_contractor(cmd.actor)
    message = validate_message(cmd.message)
    async with deps.uow as uow:
        job = await uow.market_jobs.get(cmd.job_id) if cmd.job_id else None
        if job is None or job.status is not MarketJobStatus.OPEN:
            raise MarketJobNotFound(cmd.job_id)  # only open jobs are visible to contractors
        if job.customer_id == cmd.actor.user_id:
            raise MarketJobNotFound(cmd.job_id)
        now = deps.clock()
        request = JobRequest(
            new_id("jreq"),
            job.id,
            job.customer_id,
            cmd.actor.user_id,
            message,
            JobRequestStatus.PENDING,
            now,
            now,
        )
        if not await uow.job_requests.add_if_absent(request):
            first = await uow.job_requests.get_for(job.id, cmd.actor.user_id)
            raise AlreadyRequested(job.id, first.id if first else "")
        await uow.commit()
    return JobRequestView(request, job.fields.title)


async def list_job_requests(cmd: commands.ListJobRequests, deps: Deps) -> list[JobRequestView]:
    """Requests for one job (its customer, admins) or the calling contractor's own."""
    async with deps.uow as uow:
        if cmd.job_id:
            job = await uow.market_jobs.get(cmd.job_id)
            if job is None or not (cmd.actor.is_admin or job.customer_id == cmd.actor.user_id):
                raise MarketJobNotFound(cmd.job_id)
            found = await uow.job_requests.list_by_job(job.id, LIST_LIMIT)
            titles = {job.id: job.fields.title}
        else:
            require_contractor(cmd.actor)
            found = await uow.job_requests.list_by_contractor(cmd.actor.user_id, LIST_LIMIT)
            titles = await _titles(uow, {r.job_id for r in found})
    return [JobRequestView(r, titles.get(r.job_id, "")) for r in found]


async def decide_job_request(cmd: commands.DecideJobRequest, deps: Deps) -> JobRequestView:
    require_customer(cmd.actor)
    async with deps.uow as uow:
        request = (
            await uow.job_requests.get(cmd.job_request_id, for_update=True)
            if cmd.job_request_id
            else None
        )
        if request is None or request.customer_id != cmd.actor.user_id:
            raise JobRequestNotFound(cmd.job_request_id)
        request.decide(cmd.accept, deps.clock())
        await uow.job_requests.save(request)
        job = await uow.market_jobs.get(request.job_id)
        await uow.commit()
    return JobRequestView(request, job.fields.title if job else "")


async def _titles(uow: JobsUnitOfWork, job_ids: set[str]) -> dict[str, str]:
    titles: dict[str, str] = {}
    for job_id in sorted(job_ids):
        job = await uow.market_jobs.get(job_id)
        if job is not None:
            titles[job_id] = job.fields.title
    return titles
