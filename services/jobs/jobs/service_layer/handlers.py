"""Use cases of job drafts and postings: each handler is one local transaction through the UoW."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from hirepay_platform import paging
from hirepay_platform.errors import Conflict, ValidationError
from hirepay_platform.ids import new_id
from hirepay_platform.money import Money
from jobs import metrics
from jobs.domain import commands
from jobs.domain.commands import Actor
from jobs.domain.errors import IdempotencyMismatch, JobNotFound, NotAllowed, PaymentCancelled
from jobs.domain.model import Job, JobStatus, Transition, validate_fields
from jobs.domain.saga import BEFORE_ACTIVATION, Saga, SagaError, SagaState
from jobs.service_layer.config import JobsConfig
from jobs.service_layer.ports import JobsUnitOfWork

# Lease owners ending with this are requests in flight (of any replica), which drive their saga:
# a settlement event arriving meanwhile only records what it says (no second driver racing them).
REQUEST_HOLDER_SUFFIX = "/request"
# How often a cancel re-reads a job whose payment attempt changed under it before giving up.
CANCEL_ATTEMPTS = 5


def request_holder(config: JobsConfig) -> str:
    """Lease owner of a saga while its request drives it (distinct from this process's workers)."""
    return f"{config.instance_id}{REQUEST_HOLDER_SUFFIX}"


def cancel_holder(config: JobsConfig) -> str:
    """Lease owner of a saga while a CancelJob request drives its Cancel or refund."""
    return f"{config.instance_id}/cancel{REQUEST_HOLDER_SUFFIX}"


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
    """Cancel a draft, a posting whose payment is still pending, or a live posting.

    - draft / payment_failed: the job is cancelled; nothing else moves.
    - pending_payment (bank transfer processing, 3-D Secure or checkout not completed): the saga
      goes to CANCELLING in the same transaction, so its Cancel (Void / CancelHold) is driven until
      it succeeds; money that settles anyway is refunded (PAY-7) and the job never goes live.
    - active: the refund per the policy (PAY-13) becomes a saga step (REFUNDING), retried until it
      succeeds.

    The saga row is locked before the job row, in the same order as every saga step, so a cancel
    racing a settlement event (or the recovery worker) is serialized with it: whichever commits
    first decides, and the other sees its outcome (an activation first makes this the cancel of
    an active posting; a cancel first makes the activation impossible).

    Returns the job and the id of the saga this call leased and should drive now (`drive_leased`);
    "" when there is nothing to drive, or when another live holder (the request still running,
    a recovery worker) already drives it — the saga is due at once, so recovery takes it next.
    """
    if not (cmd.actor.is_company or cmd.actor.is_admin):
        raise NotAllowed("only the owning company may cancel a job")
    for _ in range(CANCEL_ATTEMPTS):
        async with uow:
            seen = await _load_for_cancel(uow, cmd.actor, cmd.job_id, for_update=False)
            saga = await uow.sagas.get(seen.saga_id, for_update=True) if seen.saga_id else None
            job = await _load_for_cancel(uow, cmd.actor, cmd.job_id, for_update=True)
            if job.saga_id != seen.saga_id:
                # A new payment attempt started between the two reads: roll back (no lock is
                # kept out of order) and lock that attempt's saga first.
                continue
            # The time of the cancel is when it holds the locks: after an activation it waited
            # for (the trail stays in order, and the refund window counts from the posting).
            now = uow.clock()
            if job.status is JobStatus.CANCELLED:
                return job, ""  # cancelling a cancelled job changes nothing (a retried request)
            was = job.status
            reason = cmd.reason.strip() or "cancelled by the company"
            job.transition(JobStatus.CANCELLED, actor=cmd.actor.name, reason=reason, now=now)
            transitions = list(job.pending)
            saga_to_drive = ""
            if saga is not None and saga.id == job.saga_id:
                step: tuple[str, str] | None = None
                if was is JobStatus.PENDING_PAYMENT:
                    step = _cancel_pending_saga(saga, job, cmd.actor.name, reason, now)
                elif was is JobStatus.ACTIVE:
                    step = _request_refund(saga, job, config, now)
                if step is not None:
                    if _take_lease(saga, cancel_holder(config), config, now):
                        saga_to_drive = saga.id
                    await uow.sagas.save(saga)
                    await uow.sagas.log(saga.id, *step, now)
            await uow.jobs.save(job)
            await uow.commit()
        record_transitions(transitions)
        return job, saga_to_drive
    raise Conflict("the job is changing (a payment attempt is starting); retry")


async def _load_for_cancel(
    uow: JobsUnitOfWork, actor: Actor, job_id: str, *, for_update: bool
) -> Job:
    """The job to cancel: the caller's own, or any job for an admin."""
    if not actor.is_admin:
        return await load_own(uow, actor, job_id, for_update=for_update)
    job = await uow.jobs.get(job_id, for_update=for_update) if job_id else None
    if job is None:
        raise JobNotFound(job_id)
    return job


def _cancel_pending_saga(
    saga: Saga, job: Job, actor: str, reason: str, now: datetime
) -> tuple[str, str] | None:
    """Turn a saga that has not reached activation toward its Cancel (caller holds its row lock).

    The job keeps payment_status pending until the Cancel says what happened: failed when nothing
    was taken, refunded when money that arrived anyway was returned."""
    if saga.state not in BEFORE_ACTIVATION:
        return None  # already cancelling or refunding: that path ends it
    saga.state = SagaState.CANCELLING
    saga.failure = saga.failure or SagaError.of(
        PaymentCancelled(
            "the job was cancelled while its payment was pending; any money taken is returned",
            metadata={
                "job_id": job.id,
                "payment_id": saga.payment_id or job.payment_id,
                "transaction_id": saga.id,
            },
        )
    )
    saga.next_attempt_at = now
    saga.updated_at = now
    return "cancelling", f"job cancelled by {actor}: {reason}"


def _request_refund(
    saga: Saga, job: Job, config: JobsConfig, now: datetime
) -> tuple[str, str] | None:
    """Schedule the refund of a cancelled live posting per the policy (PAY-13)."""
    amount = config.refund_policy.refund_amount(job.payment_amount_minor, job.posted_at, now)
    if amount <= 0:
        return None
    saga.refund_amount_minor = amount
    saga.refund_reason = "requested_by_customer"
    if saga.state is SagaState.COMPLETED:
        saga.state = SagaState.REFUNDING
        saga.finished_at = None
        saga.next_attempt_at = now
    saga.updated_at = now
    return "refund_requested", f"{amount} on cancel"


def _take_lease(saga: Saga, owner: str, config: JobsConfig, now: datetime) -> bool:
    """Lease the saga to `owner` unless a live holder has it (caller holds the row lock)."""
    if saga.lease_owner and saga.lease_until is not None and saga.lease_until > now:
        return saga.lease_owner == owner
    saga.lease_owner = owner
    saga.lease_until = now + timedelta(seconds=config.lease_seconds)
    return True


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
