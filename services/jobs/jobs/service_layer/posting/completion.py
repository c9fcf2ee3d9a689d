"""The saga after the Try: Confirm (then activation), Cancel and Refund, each driven to an end.

A refused call is never taken at its word alone: the branch is read first (money may have settled
meanwhile, or already been returned), and only a state that ends the step moves the saga on.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from hirepay_platform.errors import ErrorKind, HirepayError
from jobs.domain.errors import PaymentExpired
from jobs.domain.model import Job, PaymentStatus, Transition
from jobs.domain.posting_saga import (
    FINAL_STATES,
    Saga,
    SagaError,
    SagaState,
    TryResult,
    TryState,
    confirm_exhausted,
    is_permanent_confirm_error,
)
from jobs.service_layer import metrics
from jobs.service_layer.answers import answer_for, answer_to_snapshot
from jobs.service_layer.deps import Deps
from jobs.service_layer.posting.activation import NOT_ACTIVATED
from jobs.service_layer.posting.records import (
    SAGA_ACTOR,
    StoredRows,
    assuming,
    fail_job,
    finish,
    nothing_written,
    record_outcome,
    retry_later,
)

# Branch states after which a refused Cancel is done (nothing held any more).
_CANCEL_DONE = frozenset(
    {TryState.CAPTURED, TryState.CANCELLED, TryState.FAILED, TryState.REFUNDED}
)
# Branch states in which a refused Confirm may still pass later.
_CONFIRM_MAY_PASS = frozenset({TryState.RESERVED, TryState.UNKNOWN, TryState.ACTION_REQUIRED})


async def _look_after_refusal(
    saga: Saga, step: str, error: HirepayError, deps: Deps, done: frozenset[TryState]
) -> TryResult | None:
    """A Cancel or Refund failed: the branch's state when it shows the step is done, else None
    (a transient failure, or a refusal that may pass: retried later)."""
    if error.kind is not ErrorKind.FAILED_PRECONDITION:
        await retry_later(saga.id, step, error, deps)
        return None
    try:
        seen = await deps.participants.for_method(saga.method).inspect(saga)
    except HirepayError as inner:
        await retry_later(saga.id, step, inner, deps)
        return None
    if seen.state not in done:
        await retry_later(saga.id, step, error, deps)
        return None
    return seen


async def confirm(saga: Saga, deps: Deps, stored: StoredRows | None = None) -> Saga | bool:
    """Confirm (Capture / ConfirmHold) until it succeeds; the saga as this step left it (or True)
    when it moved on, False when it cannot go further now. `stored`: see send_try."""
    participant = deps.participants.for_method(saga.method)
    try:
        result = await participant.confirm(saga)
    except HirepayError as exc:
        return await _confirm_refused(saga, exc, deps)
    return await _confirmed(saga, result, deps, stored)


async def _confirm_refused(saga: Saga, error: HirepayError, deps: Deps) -> Saga | bool:
    """Look at the branch before deciding: money already taken means Confirm is done; a refusal
    may pass (still reserved) only so many times; a released reservation is final at once."""
    permanent = is_permanent_confirm_error(error)
    try:
        seen = await deps.participants.for_method(saga.method).inspect(saga)
    except HirepayError as inner:
        seen, error = None, (error if permanent else inner)
    if seen is not None and seen.state is TryState.CAPTURED:
        return await _confirmed(saga, seen, deps)
    if permanent and seen is not None and seen.state not in _CONFIRM_MAY_PASS:
        # The reservation is gone for good (voided, expired, never recorded).
        return await _give_up_confirm(saga, error, deps)
    config = deps.config
    give_up_at = saga.created_at + timedelta(seconds=config.settlement_deadline_seconds)
    if confirm_exhausted(
        saga,
        permanent=permanent,
        max_refusals=config.capture_max_refusals,
        give_up_at=give_up_at,
        now=deps.clock(),
    ):
        return await _give_up_confirm(saga, error, deps)
    await retry_later(saga.id, "confirm", error, deps)
    return False


async def _give_up_confirm(saga: Saga, error: HirepayError, deps: Deps) -> bool:
    """A Confirm that cannot succeed: the job (never live) ends payment_failed, Cancel follows and
    the saga ends with the refusal recorded as its reason."""
    metrics.count(metrics.PARTICIPANT_FAILURES, "confirm", error.reason)
    expired = PaymentExpired(
        "the payment could not be captured; nothing was posted",
        metadata={
            "payment_id": saga.payment_id,
            "transaction_id": saga.id,
            "cause": error.reason,
        },
    )
    uow = deps.uow
    transitions: list[Transition] = []
    async with uow:
        now = deps.clock()
        current, job = await uow.sagas.lock_with_job(saga.id)
        if current is None or current.state is not SagaState.CONFIRMING:
            return True
        fail_job(job, current, expired.reason, refunded=False, now=now)
        current.start_cancelling(SagaError.of(expired), now)
        current.next_attempt_at = now
        if job is not None:
            transitions = list(job.pending)
            await uow.jobs.save(job)
        await uow.sagas.save(current)
        await uow.sagas.log(current.id, "cancelling", f"confirm given up: {error.reason}", now)
        await uow.commit()
    metrics.record_transitions(transitions)
    return True


async def _confirmed(
    saga: Saga, result: TryResult, deps: Deps, stored: StoredRows | None = None
) -> Saga | bool:
    """The money is taken: the job goes live in the same transaction (PAY-4). A job that can no
    longer go live (cancelled meanwhile) gets its money back instead (PAY-7). The saga as
    committed (True when another driver had moved it on)."""
    return await assuming(
        stored, lambda assumed: _confirmed_on(saga.id, result, deps, stored, assumed)
    )


async def _confirmed_on(
    saga_id: str,
    result: TryResult,
    deps: Deps,
    stored: StoredRows | None,
    assumed: object | None,
) -> Saga | bool:
    uow = deps.uow
    transitions: list[Transition] = []
    activated = False
    async with uow:
        now = deps.clock()
        current, job = await uow.sagas.lock_with_job(saga_id, assumed=assumed)
        if current is None or current.state is not SagaState.CONFIRMING:
            nothing_written(assumed)
            return True
        current.note_provider_state(result.provider_state)
        problem = "the job no longer exists" if job is None else job.activation_problem(current.id)
        if problem:
            current.captured = True
            current.start_refunding(now, reason=NOT_ACTIVATED)
            current.next_attempt_at = now
            detail = f"confirmed, not activated: {problem}"
        else:
            assert job is not None
            job.activate(
                payment_id=current.payment_id or result.payment_id,
                posting_days=deps.config.posting_days,
                actor=SAGA_ACTOR,
                now=now,
            )
            transitions = list(job.pending)
            await uow.jobs.save(job)
            current.complete(now)
            if current.state in FINAL_STATES and not current.answered:
                # The request's answer is stored by the step that ends the saga, with the
                # job as it went live: no transaction of its own (issue 13).
                current.response = answer_to_snapshot(answer_for(current, job))
            activated = True
            detail = "confirmed, job active"
        await uow.sagas.save(current)
        await uow.sagas.log(current.id, str(current.state), detail, now)
        await uow.commit()
        if stored is not None:
            stored.rows = uow.sagas.stored(saga_id)
    if current.state in FINAL_STATES:
        record_outcome(current, now)  # counted once committed
    if activated and deps.completed is not None and current.state is SagaState.COMPLETED:
        # Its settlement events are judged by this, not by reading it again (issue 13).
        deps.completed.completed(current.id, current.payment_id)
    metrics.record_transitions(transitions)
    if activated:
        metrics.count(metrics.FUNNEL, "paid")
        metrics.count(metrics.FUNNEL, "activated")
    return current


async def cancel(saga: Saga, deps: Deps) -> Saga | bool:
    """Cancel (Void / CancelHold) until it succeeds; money found captured is refunded instead.
    The saga as this step left it (True when another driver had moved it on)."""
    participant = deps.participants.for_method(saga.method)
    try:
        result = await participant.cancel(
            saga, saga.failure.reason if saga.failure else "cancelled"
        )
    except HirepayError as exc:
        # Refused: the payment may have settled meanwhile (bank transfer). Look before deciding.
        seen = await _look_after_refusal(saga, "cancel", exc, deps, _CANCEL_DONE)
        if seen is None:
            return False
        result = seen
    uow = deps.uow
    async with uow:
        now = deps.clock()
        current, job = await uow.sagas.lock_with_job(saga.id)
        if current is None or current.state is not SagaState.CANCELLING:
            return True
        current.note_provider_state(result.provider_state)
        if result.state is TryState.CAPTURED:
            current.start_refunding(now, reason=NOT_ACTIVATED)
            current.captured = True
        else:
            # Money that settled after the Void and was returned by payments counts as refunded.
            refunded = bool(current.refund_reason) or result.state is TryState.REFUNDED
            if job is not None and job.saga_id == current.id:
                _settle_cancelled(job, refunded=refunded, now=now)
                await uow.jobs.save(job)
            finish(current, SagaState.REFUNDED if refunded else SagaState.FAILED, now)
        await uow.sagas.save(current)
        await uow.sagas.log(current.id, str(current.state), f"cancel: {result.state}", now)
        await uow.commit()
    return current


def _settle_cancelled(job: Job, *, refunded: bool, now: datetime) -> None:
    """The job's payment status once its Cancel is done."""
    if refunded:
        job.payment_status = PaymentStatus.REFUNDED
    elif job.payment_status is PaymentStatus.PENDING:
        # A job cancelled while its payment was pending: nothing was taken (if money still
        # arrives, the saga reopens to refund it, see observe).
        job.payment_status = PaymentStatus.FAILED
    job.updated_at = now


async def refund(saga: Saga, deps: Deps) -> Saga | bool:
    """Refund taken money (PAY-7 after a failed activation, PAY-13 on cancellation); the saga as
    this step left it (True when another driver had moved it on)."""
    participant = deps.participants.for_method(saga.method)
    amount = saga.refund_amount_minor or saga.amount_minor
    try:
        await participant.refund(saga, amount, saga.refund_reason or NOT_ACTIVATED)
    except HirepayError as exc:
        # Refused (nothing left to refund): payments refunds by itself money that a bank transfer
        # settled after its Void, so the capture may already be (being) returned. Done once the
        # payment is refunded; until then wait (its payment.refunded event drives us again).
        done = frozenset({TryState.REFUNDED})
        if await _look_after_refusal(saga, "refund", exc, deps, done) is None:
            return False
    uow = deps.uow
    async with uow:
        now = deps.clock()
        current, job = await uow.sagas.lock_with_job(saga.id)
        if current is None or current.state is not SagaState.REFUNDING:
            return True
        if job is not None and job.saga_id == current.id:
            job.payment_status = PaymentStatus.REFUNDED
            job.updated_at = now
            await uow.jobs.save(job)
        finish(current, SagaState.REFUNDED, now)
        await uow.sagas.save(current)
        await uow.sagas.log(current.id, "refunded", f"{amount} {current.currency}", now)
        await uow.commit()
    return current
