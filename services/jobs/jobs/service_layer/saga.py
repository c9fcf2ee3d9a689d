"""The pay-to-post saga orchestrator: validate -> pending_payment -> Try -> activate -> Confirm.

Every step is persisted in the saga row before the step acts, so whoever drives a saga next (the
request, a settlement event, or the recovery worker of any replica after a crash) resumes from the
last persisted state. Participant calls are idempotent on the saga's branch, and every state change
re-reads the saga row under `FOR UPDATE` and checks its state, so two drivers racing on one saga
cannot apply a step twice. Invariant: job active => the saga reached activation and its Confirm is
being driven to success (or, if Confirm can never succeed, the job is taken down again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from hirepay_platform.errors import Conflict, ErrorKind, HirepayError, ValidationError
from hirepay_platform.ids import new_id
from jobs import metrics
from jobs.domain import commands
from jobs.domain.errors import (
    ActivationFailed,
    IdempotencyMismatch,
    InvalidTransition,
    PostingBlocked,
    RequestInProgress,
)
from jobs.domain.model import (
    POSTABLE,
    Job,
    JobStatus,
    PaymentStatus,
    Transition,
    validate_fields,
)
from jobs.domain.pricing import check_expected_amount, check_terms
from jobs.domain.saga import (
    ABUSE_REASONS,
    BEFORE_ACTIVATION,
    PaymentMethod,
    Saga,
    SagaError,
    SagaState,
    TryResult,
    TryState,
    client_error,
    is_permanent_confirm_error,
)
from jobs.service_layer.answers import (
    SagaAnswer,
    answer_for,
    answer_from_snapshot,
    answer_to_snapshot,
)
from jobs.service_layer.config import JobsConfig
from jobs.service_layer.handlers import (
    REQUEST_HOLDER_SUFFIX,
    cancel_holder,
    load_own,
    record_transitions,
    request_holder,
    require_company,
)
from jobs.service_layer.ports import JobsUnitOfWork, Participants

log = logging.getLogger(__name__)

SAGA_ACTOR = "saga"


@dataclass(frozen=True, slots=True)
class SagaDeps:
    """What the orchestrator needs besides a unit of work."""

    participants: Participants
    config: JobsConfig


@dataclass(frozen=True, slots=True)
class SettlementEvent:
    """A settlement event of the payments service, in the saga's terms."""

    event_id: str
    cursor: int
    type: str
    global_tx_id: str
    branch_id: str
    result: TryResult


# --------------------------------------------------------------------------- the request


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


async def create_job_with_payment(
    cmd: commands.CreateJobWithPayment, uow: JobsUnitOfWork, deps: SagaDeps
) -> SagaAnswer:
    """Run the saga for one request; twins of the same caller and key get the same answer (PAY-8).

    The saga row is inserted first on UNIQUE(company_id, request_id): the first request owns the
    key, concurrent twins block on the insert, then wait for the stored answer. A request refused by
    validation rolls back with its row, so fixing the draft and retrying with the key works.
    """
    require_company(cmd.actor)
    if not cmd.request_id.strip():
        raise ValidationError(
            "an idempotency key is required", fields={"request_id": "is required"}
        )
    method = parse_method(cmd.payment)
    config = deps.config
    existing: Saga | None = None
    transitions: list[Transition] = []
    async with uow:
        now = uow.clock()
        saga = Saga(
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
        if await uow.sagas.insert(saga):
            job = await _prepare_job(cmd, saga, uow, config, now)
            transitions = list(job.pending)
            await uow.sagas.save(saga)
            await uow.sagas.log(saga.id, "pending_payment", f"job {job.id} {method}", now)
            await uow.commit()
        else:
            existing = await uow.sagas.get_by_key(cmd.actor.user_id, cmd.request_id)
            if existing is None:  # the key's holder rolled back between our two statements
                raise Conflict("the idempotency key is being claimed; retry")
    if existing is not None:
        return await _replay(existing, cmd, uow, config)
    record_transitions(transitions)
    metrics.FUNNEL.labels("payment_started").inc()
    config.crash_point("pending")
    await _try(saga, uow, deps)
    await drive(saga.id, uow, deps, poll=False)
    # What is left (a retried Confirm, a settlement poll) is for whichever replica is due first.
    await release(saga.id, uow, request_holder(config))
    return await _answer(saga.id, uow, deps)


async def _prepare_job(
    cmd: commands.CreateJobWithPayment,
    saga: Saga,
    uow: JobsUnitOfWork,
    config: JobsConfig,
    now: datetime,
) -> Job:
    """Validate the request and move the job to pending_payment, in the saga's first transaction."""
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
    await _check_abuse(cmd.actor.user_id, uow, config, now)
    expected = cmd.payment.expected_amount
    fee = config.price_list.fee_for_method(
        fields.category, saga.method, expected.currency if expected else ""
    )
    check_expected_amount(fee, expected)
    job.start_payment(
        saga_id=saga.id,
        method=saga.method.value,
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
    if is_new:
        await uow.jobs.add(job)
    else:
        await uow.jobs.save(job)
    return job


async def _check_abuse(
    company_id: str, uow: JobsUnitOfWork, config: JobsConfig, now: datetime
) -> None:
    """Many failed payments in a short time look like card testing: block posting (PAY-14)."""
    if config.max_failed_payments <= 0:
        return
    window = timedelta(seconds=config.failed_payments_window_seconds)
    failures = await uow.sagas.count_failures(company_id, now - window, ABUSE_REASONS)
    if failures >= config.max_failed_payments:
        metrics.BLOCKED_POSTINGS.inc()
        log.warning("company %s blocked: %d failed payments", company_id, failures)
        raise PostingBlocked(
            "too many failed payments; posting is blocked for review",
            metadata={
                "failed_payments": str(failures),
                "retry_after_seconds": str(int(window.total_seconds())),
            },
        )


async def _replay(
    existing: Saga, cmd: commands.CreateJobWithPayment, uow: JobsUnitOfWork, config: JobsConfig
) -> SagaAnswer:
    """The answer of the first request with this key: wait while it runs, then the same answer."""
    if existing.fingerprint != cmd.fingerprint:
        raise IdempotencyMismatch(
            "this idempotency key was used with a different request",
            metadata={"request_id": cmd.request_id, "saga_id": existing.id},
        )
    saga: Saga | None = existing
    give_up = time.monotonic() + config.idempotency_wait_seconds
    while saga is not None and not saga.answered:
        if time.monotonic() >= give_up:
            raise RequestInProgress(
                "a request with this idempotency key is still in progress",
                metadata={"request_id": cmd.request_id, "saga_id": existing.id},
            )
        await asyncio.sleep(config.idempotency_poll_seconds)
        async with uow:
            saga = await uow.sagas.get(existing.id)
    assert saga is not None
    if saga.response is not None:
        return answer_from_snapshot(saga.response, replayed=True)
    assert saga.failure is not None
    raise saga.failure.to_error()


async def _answer(saga_id: str, uow: JobsUnitOfWork, deps: SagaDeps) -> SagaAnswer:
    """The answer of the first request: stored once, so every twin gets the same one."""
    await _ensure_answer(saga_id, uow)
    async with uow:
        saga = await uow.sagas.get(saga_id)
    assert saga is not None
    if saga.response is not None:
        return answer_from_snapshot(saga.response, replayed=False)
    assert saga.failure is not None
    raise saga.failure.to_error()


async def _ensure_answer(saga_id: str, uow: JobsUnitOfWork, *, settled_only: bool = False) -> None:
    """Store the answer describing the job now, unless one (or an error) is stored already.

    `settled_only`: only once the saga is final or waiting for settlement (a driver other than
    the request, e.g. recovery after a crash, must not answer for a request still in flight)."""
    async with uow:
        saga = await uow.sagas.get(saga_id, for_update=True)
        if saga is None or saga.answered:
            return
        if settled_only and not (saga.state.final or saga.state is SagaState.AWAITING_SETTLEMENT):
            return
        job = await uow.jobs.get(saga.job_id)
        if job is None:
            return
        saga.response = answer_to_snapshot(answer_for(saga, job))
        saga.updated_at = uow.clock()
        await uow.sagas.save(saga)
        await uow.commit()


# --------------------------------------------------------------------------- the steps


async def _try(saga: Saga, uow: JobsUnitOfWork, deps: SagaDeps) -> None:
    """Send the Try; whatever comes back (or does not) is persisted before anything else."""
    participant = deps.participants.for_method(saga.method)
    try:
        result = await participant.try_(saga)
    except HirepayError as exc:
        deps.config.crash_point("try")
        metrics.PARTICIPANT_FAILURES.labels("try", exc.reason).inc()
        log.info("saga %s: try failed: %r", saga.id, exc)
        await fail_before_activation(
            saga.id, client_error(exc, saga.method, saga.id), uow, deps, step="try_failed"
        )
        return
    deps.config.crash_point("try")
    await observe(saga.id, result, uow, deps, source="try")


def _activation_problem(job: Job | None, saga: Saga, config: JobsConfig) -> str:
    """Why the job cannot go live now ("" if it can)."""
    if job is None:
        return "the job no longer exists"
    if job.status is not JobStatus.PENDING_PAYMENT or job.saga_id != saga.id:
        return f"the job is {job.status.value}, no longer waiting for this payment"
    marker = config.fail_activation_marker
    if marker and marker in job.fields.title:
        return "activation failed (injected fault)"
    return ""


def _failure_error(result: TryResult, saga: Saga) -> HirepayError:
    """The client's error for a payment the participant reports failed or cancelled."""
    if result.state is TryState.CANCELLED:
        reason, message = "PAYMENT_CANCELLED", "the payment was cancelled; nothing was charged"
    else:
        reason = result.failure_reason or "PAYMENT_DECLINED"
        message = "the payment failed; nothing was charged"
    metadata = {"payment_id": result.payment_id or saga.payment_id, "transaction_id": saga.id}
    if result.failure_code:
        metadata["code"] = result.failure_code
    return HirepayError(
        message, reason=reason, kind=ErrorKind.FAILED_PRECONDITION, metadata=metadata
    )


async def observe(
    saga_id: str, result: TryResult, uow: JobsUnitOfWork, deps: SagaDeps, *, source: str
) -> bool:
    """Apply what a participant says about the branch (a Try answer, an event or a poll).

    Returns True when the saga changed. Activation happens here, in one local transaction with the
    saga's move to CONFIRMING, so the job is never active without its saga driving Confirm.
    """
    config = deps.config
    activated = False
    transitions: list[Transition] = []
    async with uow:
        now = uow.clock()
        saga = await uow.sagas.get(saga_id, for_update=True)
        if saga is None:
            return False
        before = saga.state
        if result.payment_id and not saga.payment_id:
            saga.payment_id = result.payment_id
        if result.provider_state:
            saga.provider_state = result.provider_state
        job = await uow.jobs.get(saga.job_id, for_update=True) if saga.job_id else None
        if job is not None and job.saga_id == saga.id and saga.payment_id and not job.payment_id:
            # The job names its payment as soon as it is known, so a client can resume (PAY-12).
            job.payment_id = saga.payment_id
        if saga.state in BEFORE_ACTIVATION:
            if result.state in (TryState.RESERVED, TryState.CAPTURED):
                saga.captured = result.state is TryState.CAPTURED
                problem = _activation_problem(job, saga, config)
                if not problem:
                    assert job is not None
                    job.activate(
                        payment_id=saga.payment_id,
                        posting_days=config.posting_days,
                        actor=SAGA_ACTOR,
                        now=now,
                    )
                    saga.state = SagaState.CONFIRMING
                    saga.activated = True
                    saga.next_attempt_at = now
                    activated = True
                else:
                    error = ActivationFailed(
                        f"the job could not be activated: {problem}; the payment is returned",
                        metadata={
                            "job_id": saga.job_id,
                            "payment_id": saga.payment_id,
                            "transaction_id": saga.id,
                            "refunded": "true",
                        },
                    )
                    _fail_job(job, saga, "ACTIVATION_FAILED", refunded=True, now=now)
                    saga.refund_reason = "job_not_activated"
                    saga.state = SagaState.REFUNDING if saga.captured else SagaState.CANCELLING
                    saga.failure = saga.failure or SagaError.of(error)
                    saga.next_attempt_at = now
            elif result.state in (
                TryState.ACTION_REQUIRED,
                TryState.PROCESSING,
                TryState.UNKNOWN,
            ):
                saga.state = SagaState.AWAITING_SETTLEMENT
                saga.next_action_url = result.next_action_url or saga.next_action_url
                saga.next_attempt_at = now + timedelta(seconds=config.settlement_poll_seconds)
                if not saga.answered and job is not None:
                    saga.response = answer_to_snapshot(answer_for(saga, job))
            elif result.state in (TryState.FAILED, TryState.CANCELLED, TryState.REFUNDED):
                error = _failure_error(result, saga)
                _fail_job(job, saga, error.reason, refunded=False, now=now)
                saga.state = SagaState.CANCELLING
                saga.failure = saga.failure or SagaError.of(error)
                saga.next_attempt_at = now
        elif (
            saga.state in (SagaState.CANCELLING, SagaState.FAILED)
            and result.state is TryState.CAPTURED
        ):
            # Money arrived after the saga gave up (a late bank transfer): give it back (PAY-7).
            saga.state = SagaState.REFUNDING
            saga.captured = True
            saga.refund_reason = saga.refund_reason or "job_not_activated"
            saga.finished_at = None
            saga.next_attempt_at = now
            if job is not None and job.saga_id == saga.id:
                job.payment_status = PaymentStatus.PENDING
        changed = saga.state is not before
        if changed or result.payment_id:
            saga.updated_at = now
            if job is not None:
                transitions = list(job.pending)
                await uow.jobs.save(job)
            await uow.sagas.save(saga)
            if changed:
                await uow.sagas.log(saga.id, saga.state.value, f"{source}: {result.state}", now)
            await uow.commit()
    record_transitions(transitions)
    if activated:
        metrics.FUNNEL.labels("paid").inc()
        metrics.FUNNEL.labels("activated").inc()
        config.crash_point("activate")
    return changed


def _fail_job(job: Job | None, saga: Saga, reason: str, *, refunded: bool, now: datetime) -> None:
    """Mark the saga's job payment_failed (the draft is kept), if it still belongs to this saga."""
    if job is None or job.saga_id != saga.id:
        return
    if job.status in (JobStatus.PENDING_PAYMENT, JobStatus.ACTIVE):
        job.fail_payment(
            reason=reason,
            refunded=refunded,
            actor=SAGA_ACTOR,
            now=now,
            payment_id=saga.payment_id,
        )


async def fail_before_activation(
    saga_id: str, error: HirepayError, uow: JobsUnitOfWork, deps: SagaDeps, *, step: str
) -> None:
    """Give up a saga that never reached activation: job payment_failed, then Cancel the Try.

    The Cancel is sent even when the Try failed or timed out, because the Try may have happened."""
    transitions: list[Transition] = []
    async with uow:
        now = uow.clock()
        saga = await uow.sagas.get(saga_id, for_update=True)
        if saga is None or saga.state not in BEFORE_ACTIVATION:
            return
        job = await uow.jobs.get(saga.job_id, for_update=True) if saga.job_id else None
        if not saga.payment_id:
            saga.payment_id = error.metadata.get("payment_id", "")
        _fail_job(job, saga, error.reason, refunded=False, now=now)
        saga.state = SagaState.CANCELLING
        saga.failure = saga.failure or SagaError.of(error)
        saga.next_attempt_at = now
        saga.updated_at = now
        if job is not None:
            transitions = list(job.pending)
            await uow.jobs.save(job)
        await uow.sagas.save(saga)
        await uow.sagas.log(saga.id, "cancelling", f"{step}: {error.reason}", now)
        await uow.commit()
    record_transitions(transitions)


async def _retry_later(
    saga_id: str, step: str, error: HirepayError, uow: JobsUnitOfWork, deps: SagaDeps
) -> None:
    """A transient failure of Confirm / Cancel / Refund: back off; the recovery worker retries."""
    metrics.PARTICIPANT_FAILURES.labels(step, error.reason).inc()
    log.warning("saga %s: %s failed, will retry: %r", saga_id, step, error)
    config = deps.config
    async with uow:
        now = uow.clock()
        saga = await uow.sagas.get(saga_id, for_update=True)
        if saga is None:
            return
        saga.attempts += 1
        delay = min(
            config.retry_max_seconds, config.retry_base_seconds * 2 ** min(saga.attempts, 20)
        )
        saga.next_attempt_at = now + timedelta(seconds=delay)
        saga.updated_at = now
        await uow.sagas.save(saga)
        await uow.sagas.log(saga.id, f"{step}_retry", error.reason, now)
        await uow.commit()


def _finish(saga: Saga, state: SagaState, now: datetime) -> None:
    """Move a saga to a final state and count its outcome."""
    saga.state = state
    saga.finished_at = now
    saga.next_attempt_at = None
    saga.updated_at = now
    reason = saga.failure.reason if saga.failure else ""
    metrics.SAGA_OUTCOMES.labels(state.value, reason, saga.method.value).inc()
    metrics.SAGA_DURATION.labels(state.value).observe(
        max(0.0, (now - saga.created_at).total_seconds())
    )


async def _confirm(saga: Saga, uow: JobsUnitOfWork, deps: SagaDeps) -> bool:
    """Confirm (Capture / ConfirmHold) until it succeeds; True when the saga moved on."""
    participant = deps.participants.for_method(saga.method)
    try:
        result = await participant.confirm(saga)
    except HirepayError as exc:
        if not is_permanent_confirm_error(exc):
            await _retry_later(saga.id, "confirm", exc, uow, deps)
            return False
        # Refused: look at the branch before deciding. Still reserved means the refusal may pass
        # (retry); already taken means Confirm is done; only a released reservation is final.
        try:
            seen = await participant.inspect(saga)
        except HirepayError as inner:
            await _retry_later(saga.id, "confirm", inner, uow, deps)
            return False
        if seen.state in (TryState.RESERVED, TryState.UNKNOWN, TryState.ACTION_REQUIRED):
            await _retry_later(saga.id, "confirm", exc, uow, deps)
            return False
        if seen.state is TryState.CAPTURED:
            return await _confirmed(saga, seen, uow, deps)
        # The reservation is gone for good (voided, expired): the job must not stay live.
        metrics.PARTICIPANT_FAILURES.labels("confirm", exc.reason).inc()
        transitions: list[Transition] = []
        async with uow:
            now = uow.clock()
            current = await uow.sagas.get(saga.id, for_update=True)
            if current is None or current.state is not SagaState.CONFIRMING:
                return True
            job = await uow.jobs.get(current.job_id, for_update=True)
            _fail_job(job, current, exc.reason, refunded=False, now=now)
            current.state = SagaState.CANCELLING
            current.failure = current.failure or SagaError.of(
                client_error(exc, current.method, current.id)
            )
            current.updated_at = now
            if job is not None:
                transitions = list(job.pending)
                await uow.jobs.save(job)
            await uow.sagas.save(current)
            await uow.sagas.log(current.id, "cancelling", f"confirm refused: {exc.reason}", now)
            await uow.commit()
        record_transitions(transitions)
        return True
    return await _confirmed(saga, result, uow, deps)


async def _confirmed(saga: Saga, result: TryResult, uow: JobsUnitOfWork, deps: SagaDeps) -> bool:
    """Record a successful Confirm: the job's payment is completed (or a requested refund starts)."""
    deps.config.crash_point("confirm")
    async with uow:
        now = uow.clock()
        current = await uow.sagas.get(saga.id, for_update=True)
        if current is None or current.state is not SagaState.CONFIRMING:
            return True
        job = await uow.jobs.get(current.job_id, for_update=True)
        current.captured = True
        if result.provider_state:
            current.provider_state = result.provider_state
        if job is not None and job.saga_id == current.id:
            job.payment_status = PaymentStatus.COMPLETED
            job.payment_id = job.payment_id or current.payment_id
            job.updated_at = now
            await uow.jobs.save(job)
        if current.refund_amount_minor > 0:
            current.state = SagaState.REFUNDING
            current.updated_at = now
        else:
            _finish(current, SagaState.COMPLETED, now)
        await uow.sagas.save(current)
        await uow.sagas.log(current.id, current.state.value, "confirmed", now)
        await uow.commit()
    return True


async def _cancel(saga: Saga, uow: JobsUnitOfWork, deps: SagaDeps) -> bool:
    """Cancel (Void / CancelHold) until it succeeds; money found captured is refunded instead."""
    participant = deps.participants.for_method(saga.method)
    try:
        result = await participant.cancel(
            saga, saga.failure.reason if saga.failure else "cancelled"
        )
    except HirepayError as exc:
        if exc.kind is not ErrorKind.FAILED_PRECONDITION:
            await _retry_later(saga.id, "cancel", exc, uow, deps)
            return False
        # Refused: the payment may have settled meanwhile (bank transfer). Look before deciding.
        try:
            result = await participant.inspect(saga)
        except HirepayError as inner:
            await _retry_later(saga.id, "cancel", inner, uow, deps)
            return False
        if result.state not in (
            TryState.CAPTURED,
            TryState.CANCELLED,
            TryState.FAILED,
            TryState.REFUNDED,
        ):
            await _retry_later(saga.id, "cancel", exc, uow, deps)
            return False
    async with uow:
        now = uow.clock()
        current = await uow.sagas.get(saga.id, for_update=True)
        if current is None or current.state is not SagaState.CANCELLING:
            return True
        if result.provider_state:
            current.provider_state = result.provider_state
        if result.state is TryState.CAPTURED:
            current.state = SagaState.REFUNDING
            current.captured = True
            current.refund_reason = current.refund_reason or "job_not_activated"
            current.updated_at = now
        else:
            # Money that settled after the Void and was returned by payments counts as refunded.
            refunded = bool(current.refund_reason) or result.state is TryState.REFUNDED
            job = await uow.jobs.get(current.job_id, for_update=True)
            if job is not None and job.saga_id == current.id:
                if refunded:
                    job.payment_status = PaymentStatus.REFUNDED
                elif job.payment_status is PaymentStatus.PENDING:
                    # A job cancelled while its payment was pending: nothing was taken (if money
                    # still arrives, the saga reopens to refund it, see observe).
                    job.payment_status = PaymentStatus.FAILED
                job.updated_at = now
                await uow.jobs.save(job)
            _finish(current, SagaState.REFUNDED if refunded else SagaState.FAILED, now)
        await uow.sagas.save(current)
        await uow.sagas.log(current.id, current.state.value, f"cancel: {result.state}", now)
        await uow.commit()
    return True


async def _refund(saga: Saga, uow: JobsUnitOfWork, deps: SagaDeps) -> bool:
    """Refund taken money (PAY-7 after a failed activation, PAY-13 on cancellation)."""
    participant = deps.participants.for_method(saga.method)
    amount = saga.refund_amount_minor or saga.amount_minor
    try:
        await participant.refund(saga, amount, saga.refund_reason or "job_not_activated")
    except HirepayError as exc:
        if exc.kind is not ErrorKind.FAILED_PRECONDITION:
            await _retry_later(saga.id, "refund", exc, uow, deps)
            return False
        # Refused (nothing left to refund): payments refunds by itself money that a bank transfer
        # settled after its Void, so the capture may already be (being) returned. Done once the
        # payment is refunded; until then wait (its payment.refunded event drives us again).
        try:
            seen = await participant.inspect(saga)
        except HirepayError as inner:
            await _retry_later(saga.id, "refund", inner, uow, deps)
            return False
        if seen.state is not TryState.REFUNDED:
            await _retry_later(saga.id, "refund", exc, uow, deps)
            return False
    async with uow:
        now = uow.clock()
        current = await uow.sagas.get(saga.id, for_update=True)
        if current is None or current.state is not SagaState.REFUNDING:
            return True
        job = await uow.jobs.get(current.job_id, for_update=True)
        if job is not None and job.saga_id == current.id:
            job.payment_status = PaymentStatus.REFUNDED
            job.updated_at = now
            await uow.jobs.save(job)
        _finish(current, SagaState.REFUNDED, now)
        await uow.sagas.save(current)
        await uow.sagas.log(current.id, "refunded", f"{amount} {current.currency}", now)
        await uow.commit()
    return True


async def drive(saga_id: str, uow: JobsUnitOfWork, deps: SagaDeps, *, poll: bool) -> None:
    """Advance a saga as far as it can go now (at most a few steps); `poll` also asks the
    participant about a saga waiting for settlement (recovery), and re-sends a lost Try."""
    config = deps.config
    for _ in range(8):
        async with uow:
            saga = await uow.sagas.get(saga_id)
            now = uow.clock()
        if saga is None or saga.state.final:
            break
        if saga.state is SagaState.CONFIRMING:
            if not await _confirm(saga, uow, deps):
                break
        elif saga.state is SagaState.CANCELLING:
            if not await _cancel(saga, uow, deps):
                break
        elif saga.state is SagaState.REFUNDING:
            if not await _refund(saga, uow, deps):
                break
        elif saga.state is SagaState.TRYING:
            if not poll:
                break
            if now >= saga.deadline_at:
                timeout = HirepayError(
                    "the payment did not complete in time; nothing was posted",
                    reason="PAYMENT_TIMEOUT",
                    kind=ErrorKind.DEADLINE_EXCEEDED,
                    metadata={"payment_id": saga.payment_id},
                )
                await fail_before_activation(
                    saga.id, client_error(timeout, saga.method, saga.id), uow, deps, step="deadline"
                )
            else:
                # The Try's answer was lost (a crash): the Try is idempotent on the branch.
                await _try(saga, uow, deps)
        elif saga.state is SagaState.AWAITING_SETTLEMENT:
            if not poll:
                break
            if now >= saga.created_at + timedelta(seconds=config.settlement_deadline_seconds):
                expired = HirepayError(
                    "the payment was not completed in time; nothing was posted",
                    reason="PAYMENT_EXPIRED",
                    kind=ErrorKind.FAILED_PRECONDITION,
                    metadata={"payment_id": saga.payment_id, "transaction_id": saga.id},
                )
                await fail_before_activation(
                    saga.id, expired, uow, deps, step="settlement_deadline"
                )
                continue
            try:
                result = await deps.participants.for_method(saga.method).inspect(saga)
            except HirepayError as exc:
                await _retry_later(saga.id, "poll", exc, uow, deps)
                break
            if not await observe(saga.id, result, uow, deps, source="poll"):
                await _schedule_poll(saga.id, uow, config)
                break
    await _ensure_answer(saga_id, uow, settled_only=True)


async def _schedule_poll(saga_id: str, uow: JobsUnitOfWork, config: JobsConfig) -> None:
    """Look at a saga waiting for settlement again later."""
    async with uow:
        saga = await uow.sagas.get(saga_id, for_update=True)
        if saga is None or saga.state is not SagaState.AWAITING_SETTLEMENT:
            return
        saga.next_attempt_at = uow.clock() + timedelta(seconds=config.settlement_poll_seconds)
        await uow.sagas.save(saga)
        await uow.commit()


async def release(saga_id: str, uow: JobsUnitOfWork, owner: str) -> None:
    """Give up this process's lease on a saga, so another driver may take it when due."""
    async with uow:
        saga = await uow.sagas.get(saga_id, for_update=True)
        if saga is None or saga.lease_owner != owner:
            return
        saga.lease_owner = ""
        saga.lease_until = None
        await uow.sagas.save(saga)
        await uow.commit()


async def drive_leased(saga_id: str, uow: JobsUnitOfWork, deps: SagaDeps, owner: str) -> None:
    """Drive a saga whose lease `owner` took (e.g. CancelJob), then give the lease up; a failure
    is left to the recovery worker (the saga is due, and the lease expires if we die)."""
    try:
        await drive(saga_id, uow, deps, poll=False)
    except Exception:
        log.exception("saga %s: driving for %s failed; recovery retries", saga_id, owner)
    finally:
        await release(saga_id, uow, owner)


async def drive_cancellation(saga_id: str, uow: JobsUnitOfWork, deps: SagaDeps) -> None:
    """Drive the saga of a cancelled job (its Cancel, or its refund) under CancelJob's lease."""
    await drive_leased(saga_id, uow, deps, cancel_holder(deps.config))


# --------------------------------------------------------------------------- the workers


async def recover_due(
    uow_factory: Callable[[], JobsUnitOfWork], deps: SagaDeps, limit: int = 20
) -> int:
    """Lease the unfinished sagas that are due and drive each one (the recovery worker's tick).

    Leases are taken with FOR UPDATE SKIP LOCKED and expire, so several replicas share the work and
    a crashed holder's sagas are taken over once its lease runs out."""
    config = deps.config
    uow = uow_factory()
    async with uow:
        now = uow.clock()
        sagas = await uow.sagas.claim_due(
            now, config.instance_id, now + timedelta(seconds=config.lease_seconds), limit
        )
        await uow.commit()

    async def recover(saga_id: str) -> None:
        # Each saga gets its own unit of work: they are driven concurrently, so one slow
        # participant call does not hold the others past their leases.
        own = uow_factory()
        try:
            await drive(saga_id, own, deps, poll=True)
        except Exception:
            log.exception("saga %s: recovery failed; will retry", saga_id)
        finally:
            await release(saga_id, own, config.instance_id)

    await asyncio.gather(*(recover(s.id) for s in sagas))
    async with uow:
        metrics.STUCK_SAGAS.set(await uow.sagas.count_stuck(uow.clock()))
    return len(sagas)


async def apply_settlement_event(
    event: SettlementEvent, uow: JobsUnitOfWork, deps: SagaDeps, *, consumer: str
) -> bool:
    """Apply one settlement event (PAY-9) and record its cursor; safe to apply twice."""
    applied = False
    if event.branch_id in ("", "payment") and event.global_tx_id:
        async with uow:
            saga = await uow.sagas.get(event.global_tx_id)
        refund_event = event.result.state is TryState.REFUNDED
        if saga is not None:
            if not refund_event:
                applied = await observe(saga.id, event.result, uow, deps, source=event.type)
            async with uow:
                current = await uow.sagas.get(saga.id)
                now = uow.clock()
            # A live holder (a request) drives its own saga: no second Confirm racing it.
            held = (
                current is not None
                and current.lease_until is not None
                and current.lease_until > now
                and current.lease_owner.endswith(REQUEST_HOLDER_SUFFIX)
            )
            # A refund event only matters to a saga waiting for its money to be returned.
            waiting = current is not None and current.state is SagaState.REFUNDING
            if not held and (waiting or not refund_event):
                await drive(saga.id, uow, deps, poll=False)
    async with uow:
        await uow.settlements.advance(consumer, event.cursor)
        await uow.commit()
    metrics.SETTLEMENT_EVENTS.labels(event.type, str(applied).lower()).inc()
    return applied
