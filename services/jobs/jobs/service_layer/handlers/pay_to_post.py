"""CreateJobWithPayment: validate, persist the saga and the pending job, then run the saga (PAY-4).

Every step is persisted in the saga row before the step acts, so whoever drives the saga next (the
request, a settlement event, or the recovery worker of any replica after a crash) resumes from the
last persisted state. Twins of one request (same caller and key) get the same answer (PAY-8).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta

from hirepay_platform.errors import Conflict, HirepayError, ValidationError
from hirepay_platform.ids import new_id
from jobs.domain import commands
from jobs.domain.errors import (
    IdempotencyMismatch,
    InvalidTransition,
    PostingBlocked,
    PostingRateLimited,
    RequestInProgress,
)
from jobs.domain.model import POSTABLE, Job, JobStatus, Transition, validate_fields
from jobs.domain.posting_saga import ABUSE_REASONS, PaymentMethod, Saga, SagaState
from jobs.domain.pricing import check_expected_amount, check_terms
from jobs.domain.rate_limits import PostingAttempt
from jobs.service_layer import metrics
from jobs.service_layer.access import load_own, require_company
from jobs.service_layer.answers import SagaAnswer, answer_from_snapshot
from jobs.service_layer.config import JobsConfig
from jobs.service_layer.deps import Deps
from jobs.service_layer.handlers.rate_limits import posting_attempt, spend_posting_attempt
from jobs.service_layer.posting.activation import send_try
from jobs.service_layer.posting.driver import answer_and_release, drive, ensure_answer
from jobs.service_layer.posting.leases import request_holder
from jobs.service_layer.posting.records import StoredRows

log = logging.getLogger(__name__)


def parse_method(choice: commands.PaymentChoice) -> PaymentMethod:
    """The payment method of a request, with field-level errors."""
    try:
        method = PaymentMethod(choice.method.strip().lower())
    except ValueError:
        raise ValidationError(
            "unknown payment method",
            fields={
                "payment.method": "must be one of " + ", ".join(m.value for m in PaymentMethod)
            },
        ) from None
    if method is PaymentMethod.CARD and not choice.payment_method_token.strip():
        raise ValidationError(
            "a card payment needs a payment method token",
            fields={"payment.payment_method": "is required for card (a pm_... token)"},
        )
    return method


def _new_saga(
    cmd: commands.CreateJobWithPayment, method: PaymentMethod, config: JobsConfig, now: datetime
) -> Saga:
    """The saga row of a request, leased to the request while it drives the saga."""
    return Saga(
        id=new_id("saga"),
        company_id=cmd.actor.user_id,
        request_id=cmd.request_id,
        fingerprint=cmd.fingerprint,
        actor=cmd.actor.name,
        state=SagaState.TRYING,
        method=method,
        created_at=now,
        updated_at=now,
        deadline_at=now + timedelta(seconds=config.saga_deadline_seconds),
        payment_token=cmd.payment.payment_method_token.strip()
        or (config.bank_transfer_token if method is PaymentMethod.BANK_TRANSFER else ""),
        return_url=cmd.payment.return_url,
        cancel_url=cmd.payment.cancel_url,
        email=cmd.email,
        lease_owner=request_holder(config),
        lease_until=now + timedelta(seconds=config.lease_seconds),
    )


async def create_job_with_payment(cmd: commands.CreateJobWithPayment, deps: Deps) -> SagaAnswer:
    """Spend a posting attempt of the caller's rate limit (PAY-14), then run the saga.

    The attempt is spent before anything else and commits: a refused one changes nothing
    (PostingRateLimited), and an allowed one counts even if the posting then fails, as every
    attempt does. A posting of new fields spends it with its saga's first step, in the same
    statement (issue 13: one round trip less); any other request spends it alone first. The
    decision comes back with the answer, and with any error as its metadata, so the caller's
    RateLimit headers hold on every reply."""
    require_company(cmd.actor)
    if not cmd.request_id.strip():
        raise ValidationError(
            "an idempotency key is required", fields={"request_id": "is required"}
        )
    attempt = None
    if cmd.rate_limit is not None:
        attempt = posting_attempt(
            commands.TakePostingAttempt(
                cmd.actor, cmd.request_id, cmd.rate_limit.limit, cmd.rate_limit.window_seconds
            ),
            deps,
        )
    start = _Start(cmd, deps)
    decision = None
    if attempt is not None:
        if start.new is not None:
            await _start_new_job(cmd, start, deps, attempt)
        decision = attempt.decision() or await spend_posting_attempt(attempt, deps)
        if not decision.allowed:
            raise PostingRateLimited(
                "too many posting attempts; retry after retry_after_seconds",
                metadata=decision.as_metadata(),
            )
    try:
        answer = await _run(cmd, deps, start)
    except HirepayError as exc:
        if decision is not None:
            exc.metadata.update(decision.as_metadata())
        raise
    return answer if decision is None else answer.with_rate_limit(decision)


# What starting a saga gives: the saga already holding the key (None: ours was inserted, with
# its job), and the job's transitions it stored.
_Started = tuple[Saga | None, list[Transition]]


class _Start:
    """A request's saga before its first step: its new job when the request posts new fields
    that pass every check (the first step is then one statement), and what the first step
    gave once taken (`started`), with the rows it stored (`rows`)."""

    def __init__(self, cmd: commands.CreateJobWithPayment, deps: Deps) -> None:
        self.now = now = deps.clock()
        self.new: tuple[Saga, Job] | None = None
        self.started: _Started | None = None
        # The saga's and job's rows as each step stores them, for the next step to assume.
        self.rows = StoredRows()
        if cmd.draft_id or cmd.fields is None:
            return
        config = deps.config
        try:
            method = parse_method(cmd.payment)
            saga = _new_saga(cmd, method, config, now)
            fields = validate_fields(cmd.fields, config.price_list.categories)
            job = Job.new_draft(new_id("job"), cmd.actor.user_id, fields, cmd.actor.name, now)
            check_terms(cmd.accept_terms, cmd.terms_version, config.terms_version)
            _start_payment(cmd, saga, job, fields.category, deps, now)
        except HirepayError:
            return  # the transactional way answers it as it always did
        self.new = saga, job


async def _run(cmd: commands.CreateJobWithPayment, deps: Deps, start: _Start) -> SagaAnswer:
    """Run the saga for one request; twins of the same caller and key get the same answer (PAY-8).

    The saga row is inserted first on UNIQUE(company_id, request_id): the first request owns the
    key, concurrent twins block on the insert, then wait for the stored answer. A request refused by
    validation rolls back with its row, so fixing the draft and retrying with the key works.
    """
    config = deps.config
    if start.started is None and start.new is not None:
        await _start_new_job(cmd, start, deps)
    if start.started is None:
        saga = _new_saga(cmd, parse_method(cmd.payment), config, deps.clock())
        start.started = await _start_in_transaction(cmd, saga, deps)
    else:
        assert start.new is not None
        saga = start.new[0]
    existing, transitions = start.started
    if existing is not None:
        return await _replay(existing, cmd, deps)
    metrics.record_transitions(transitions)
    metrics.count(metrics.FUNNEL, "payment_started")
    completed = deps.completed
    if completed is not None:
        # Its settlement events wait for this request rather than read the saga it holds.
        completed.driving(saga.id)
    try:
        stored = await _drive_own(saga, deps, start.rows)
    finally:
        if completed is not None:
            completed.done_driving(saga.id)
    if stored.response is not None:
        return answer_from_snapshot(stored.response, replayed=False)
    assert stored.failure is not None
    raise stored.failure.to_error()


async def _drive_own(saga: Saga, deps: Deps, rows: StoredRows) -> Saga:
    """Send the Try of the saga this request started, drive it as far as it goes now, and
    return it with the request's answer stored."""
    tried = await send_try(saga, deps, rows)
    ended = await drive(saga.id, deps, poll=False, answer=False, saga=tried, stored=rows)
    holder = request_holder(deps.config)
    stored: Saga | None = ended
    if ended is None or not ended.answered or ended.lease_owner == holder:
        # The answer is stored once, so every twin gets the same one; what is left of the saga
        # (a retried Confirm, a settlement poll) is for whichever replica is due first. A saga
        # the drive ended answered and with no lease of ours needs neither: its last step
        # stored the answer, and a final saga keeps no lease.
        stored = await answer_and_release(saga.id, deps, holder)
    assert stored is not None
    return stored


async def _start_new_job(
    cmd: commands.CreateJobWithPayment,
    start: _Start,
    deps: Deps,
    attempt: PostingAttempt | None = None,
) -> None:
    """The saga's first step for a posting of new fields (checked by _Start), in one statement
    that commits by itself (issue 13): the saga inserted first on its key with its job and log
    line, the abuse rule (PAY-14) checked by the same statement; `attempt`: spent first by the
    same statement too (its outcome recorded on it), and then only a saga it inserted is taken
    as the first step (otherwise the step is taken again alone, after the attempt's decision).
    Sets `start.started` unless the transactional way is to answer (a blocked company, or a key
    whose holder went away: its errors and the key's claim are as before)."""
    assert start.new is not None
    saga, job = start.new
    config = deps.config
    now = start.now
    counting = config.max_failed_payments > 0
    transitions = list(job.pending)
    async with deps.uow as uow:
        inserted, failures = await uow.sagas.insert_posting(
            saga,
            job,
            f"job {job.id} {saga.method}",
            failures_since=(
                now - timedelta(seconds=config.failed_payments_window_seconds) if counting else None
            ),
            reasons=ABUSE_REASONS,
            max_failures=config.max_failed_payments,
            attempt=attempt,
        )
        if inserted:
            start.rows.rows = uow.sagas.stored(saga.id)
            start.started = None, transitions
            return
        if attempt is not None:
            return
        existing = await uow.sagas.get_by_key(cmd.actor.user_id, cmd.request_id)
    if existing is None:
        # Nothing inserted and the key is free: the company is blocked (or the key's holder
        # went away between our two statements).
        _check_abuse(cmd.actor.user_id, failures, deps)
        raise Conflict("the idempotency key is being claimed; retry")
    start.started = existing, []


async def _start_in_transaction(
    cmd: commands.CreateJobWithPayment, saga: Saga, deps: Deps
) -> _Started:
    """The saga's first step in a transaction: the key claimed first, then the draft (locked)
    or the new job checked and moved to pending_payment; a refusal rolls back with the key."""
    uow = deps.uow
    async with uow:
        now = saga.created_at
        failures = await _claim(saga, deps, now)
        if failures is not None:
            job = await _prepare_job(cmd, saga, deps, now, failures)
            transitions = list(job.pending)
            await uow.sagas.save(saga)
            await uow.sagas.log(saga.id, "pending_payment", f"job {job.id} {saga.method}", now)
            await uow.commit()
            return None, transitions
        existing = await uow.sagas.get_by_key(cmd.actor.user_id, cmd.request_id)
        if existing is None:  # the key's holder rolled back between our two statements
            raise Conflict("the idempotency key is being claimed; retry")
    return existing, []


async def _claim(saga: Saga, deps: Deps, now: datetime) -> int | None:
    """Insert the saga first on its key (None: the key is taken) and, in the same round trip,
    count the company's recent failed payments for the abuse rule (PAY-14; 0 without one)."""
    config = deps.config
    if config.max_failed_payments <= 0:
        return 0 if await deps.uow.sagas.insert(saga) else None
    since = now - timedelta(seconds=config.failed_payments_window_seconds)
    return await deps.uow.sagas.insert_counting_failures(saga, since, ABUSE_REASONS)


async def _prepare_job(
    cmd: commands.CreateJobWithPayment, saga: Saga, deps: Deps, now: datetime, failures: int
) -> Job:
    """Validate the request and move the job to pending_payment, in the saga's first transaction."""
    config = deps.config
    uow = deps.uow
    categories = config.price_list.categories
    if cmd.draft_id:
        job = await load_own(uow, cmd.actor, cmd.draft_id, for_update=True)
        fields = validate_fields(job.fields, categories)
        if job.status not in POSTABLE:
            raise InvalidTransition(job.id, job.status.value, JobStatus.PENDING_PAYMENT.value)
        is_new = False
    elif cmd.fields is not None:
        fields = validate_fields(cmd.fields, categories)
        job = Job.new_draft(new_id("job"), cmd.actor.user_id, fields, cmd.actor.name, now)
        is_new = True
    else:
        raise ValidationError(
            "a draft id or the job is required", fields={"job": "draft_id or job is required"}
        )
    check_terms(cmd.accept_terms, cmd.terms_version, config.terms_version)
    _check_abuse(cmd.actor.user_id, failures, deps)
    _start_payment(cmd, saga, job, fields.category, deps, now)
    if is_new:
        await uow.jobs.add(job)
    else:
        await uow.jobs.save(job)
    return job


def _start_payment(
    cmd: commands.CreateJobWithPayment,
    saga: Saga,
    job: Job,
    category: str,
    deps: Deps,
    now: datetime,
) -> None:
    """Price the job (checked against the amount the client expects) and move it and its saga
    to pending_payment."""
    config = deps.config
    expected = cmd.payment.expected_amount
    fee = config.price_list.fee_for_method(
        category, saga.method, expected.currency if expected else ""
    )
    check_expected_amount(fee, expected)
    job.start_payment(
        saga_id=saga.id,
        method=str(saga.method),
        amount_minor=fee.amount_minor,
        currency=fee.currency,
        terms_version=config.terms_version,
        actor=cmd.actor.name,
        now=now,
    )
    saga.job_id = job.id
    saga.amount_minor = fee.amount_minor
    saga.currency = fee.currency
    saga.terms_version = config.terms_version


def _check_abuse(company_id: str, failures: int, deps: Deps) -> None:
    """Many failed payments in a short time look like card testing: block posting (PAY-14)."""
    config = deps.config
    if config.max_failed_payments <= 0 or failures < config.max_failed_payments:
        return
    metrics.BLOCKED_POSTINGS.inc()
    log.warning("company %s blocked: %d failed payments", company_id, failures)
    raise PostingBlocked(
        "too many failed payments; posting is blocked for review",
        metadata={
            "failed_payments": str(failures),
            "retry_after_seconds": str(int(config.failed_payments_window_seconds)),
        },
    )


async def _replay(existing: Saga, cmd: commands.CreateJobWithPayment, deps: Deps) -> SagaAnswer:
    """The answer of the first request with this key: wait while it runs, then the same answer."""
    if existing.fingerprint != cmd.fingerprint:
        raise IdempotencyMismatch(
            "this idempotency key was used with a different request",
            metadata={"request_id": cmd.request_id, "saga_id": existing.id},
        )
    config = deps.config
    saga: Saga | None = existing
    give_up = time.monotonic() + config.idempotency_wait_seconds
    while saga is not None and not saga.answered:
        if saga.state.final:
            # Its request died after the saga's last step (e.g. right after the activation):
            # the answer describes the job as the saga left it.
            await ensure_answer(saga.id, deps, settled_only=True)
        if time.monotonic() >= give_up:
            raise RequestInProgress(
                "a request with this idempotency key is still in progress",
                metadata={"request_id": cmd.request_id, "saga_id": existing.id},
            )
        await asyncio.sleep(config.idempotency_poll_seconds)
        async with deps.uow as uow:
            saga = await uow.sagas.get(existing.id)
    assert saga is not None
    if saga.response is not None:
        return answer_from_snapshot(saga.response, replayed=True)
    assert saga.failure is not None
    raise saga.failure.to_error()
