"""Use cases that end a posting: CancelJob (with its saga's Cancel or refund) and expiry (PAY-13)."""

from __future__ import annotations

from datetime import datetime, timedelta

from hirepay_platform.errors import Conflict
from jobs.domain import commands
from jobs.domain.commands import Actor
from jobs.domain.errors import JobNotFound, NotAllowed, PaymentCancelled
from jobs.domain.model import Job, JobStatus, Transition
from jobs.domain.posting_saga import BEFORE_LIVE, Saga, SagaError
from jobs.service_layer import metrics
from jobs.service_layer.access import load_own
from jobs.service_layer.deps import Deps
from jobs.service_layer.ports import JobsUnitOfWork
from jobs.service_layer.posting.driver import drive_leased
from jobs.service_layer.posting.leases import cancel_holder

# How often a cancel re-reads a job whose payment attempt changed under it before giving up.
CANCEL_ATTEMPTS = 5
# The refund reason of a live posting its company cancelled.
REQUESTED_BY_CUSTOMER = "requested_by_customer"


async def cancel_job(cmd: commands.CancelJob, deps: Deps) -> tuple[Job, str]:
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

    Returns the job and the id of the saga this call leased and should drive now
    (`drive_cancellation`); "" when there is nothing to drive, or when another live holder (the
    request still running, a recovery worker) already drives it — the saga is due at once, so
    recovery takes it next.
    """
    if not (cmd.actor.is_company or cmd.actor.is_admin):
        raise NotAllowed("only the owning company may cancel a job")
    for _ in range(CANCEL_ATTEMPTS):
        outcome = await _try_cancel(cmd, deps)
        if outcome is not None:
            job, saga_to_drive, transitions = outcome
            metrics.record_transitions(transitions)
            return job, saga_to_drive
    raise Conflict("the job is changing (a payment attempt is starting); retry")


async def _try_cancel(
    cmd: commands.CancelJob, deps: Deps
) -> tuple[Job, str, list[Transition]] | None:
    """One attempt in one transaction; None when a new payment attempt started meanwhile."""
    uow = deps.uow
    async with uow:
        seen = await _load_for_cancel(uow, cmd.actor, cmd.job_id, for_update=False)
        saga = await uow.sagas.get(seen.saga_id, for_update=True) if seen.saga_id else None
        job = await _load_for_cancel(uow, cmd.actor, cmd.job_id, for_update=True)
        if job.saga_id != seen.saga_id:
            # A new payment attempt started between the two reads: roll back (no lock is
            # kept out of order) and lock that attempt's saga first.
            return None
        # The time of the cancel is when it holds the locks: after an activation it waited
        # for (the trail stays in order, and the refund window counts from the posting).
        now = deps.clock()
        if job.status is JobStatus.CANCELLED:
            return job, "", []  # cancelling a cancelled job changes nothing (a retried request)
        was = job.status
        reason = cmd.reason.strip() or "cancelled by the company"
        job.transition(JobStatus.CANCELLED, actor=cmd.actor.name, reason=reason, now=now)
        transitions = list(job.pending)
        saga_to_drive = ""
        if saga is not None and saga.id == job.saga_id:
            saga_to_drive = await _move_saga(saga, job, was, cmd.actor.name, reason, deps, now)
        await uow.jobs.save(job)
        await uow.commit()
    return job, saga_to_drive, transitions


async def _move_saga(
    saga: Saga, job: Job, was: JobStatus, actor: str, reason: str, deps: Deps, now: datetime
) -> str:
    """Turn the cancelled job's saga toward its Cancel or refund; the saga id if leased to us."""
    step: tuple[str, str] | None = None
    if was is JobStatus.PENDING_PAYMENT:
        step = _cancel_pending_saga(saga, job, actor, reason, now)
    elif was is JobStatus.ACTIVE:
        step = _request_refund(saga, job, deps, now)
    if step is None:
        return ""
    config = deps.config
    leased = saga.take_lease(
        cancel_holder(config), now + timedelta(seconds=config.lease_seconds), now
    )
    await deps.uow.sagas.save(saga)
    await deps.uow.sagas.log(saga.id, *step, now)
    return saga.id if leased else ""


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
    """Turn a saga whose job is not live yet toward its Cancel (caller holds its row lock).

    Also a saga in CONFIRMING: a capture racing this cancel is found by the Cancel (the Void is
    refused, the branch reads captured) and refunded, since the job can no longer go live.
    The job keeps payment_status pending until the Cancel says what happened: failed when nothing
    was taken, refunded when money that arrived anyway was returned."""
    if saga.state not in BEFORE_LIVE:
        return None  # already cancelling or refunding: that path ends it
    cancelled = PaymentCancelled(
        "the job was cancelled while its payment was pending; any money taken is returned",
        metadata={
            "job_id": job.id,
            "payment_id": saga.payment_id or job.payment_id,
            "transaction_id": saga.id,
        },
    )
    saga.start_cancelling(SagaError.of(cancelled), now)
    saga.next_attempt_at = now
    return "cancelling", f"job cancelled by {actor}: {reason}"


def _request_refund(saga: Saga, job: Job, deps: Deps, now: datetime) -> tuple[str, str] | None:
    """Schedule the refund of a cancelled live posting per the policy (PAY-13)."""
    policy = deps.config.refund_policy
    amount = policy.refund_amount(job.payment_amount_minor, job.posted_at, now)
    if amount <= 0:
        return None
    saga.request_refund(amount, REQUESTED_BY_CUSTOMER, now)
    return "refund_requested", f"{amount} on cancel"


async def drive_cancellation(cmd: commands.DriveCancellation, deps: Deps) -> None:
    """Drive the saga of a cancelled job (its Cancel, or its refund) under CancelJob's lease."""
    await drive_leased(cmd.saga_id, deps, cancel_holder(deps.config))


async def expire_due(cmd: commands.ExpirePostings, deps: Deps) -> int:
    """Expire active postings past their period (PAY-13); safe with several replicas (SKIP LOCKED)."""
    uow = deps.uow
    async with uow:
        now = deps.clock()
        jobs = await uow.jobs.lock_expired(now, cmd.limit)
        transitions: list[Transition] = []
        for job in jobs:
            job.transition(
                JobStatus.EXPIRED, actor="system", reason="posting period ended", now=now
            )
            transitions.extend(job.pending)
            await uow.jobs.save(job)
        await uow.commit()
    metrics.record_transitions(transitions)
    metrics.EXPIRED_JOBS.inc(len(jobs))
    return len(jobs)
