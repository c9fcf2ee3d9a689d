"""The saga after the Try: Confirm, Cancel and Refund, each driven until it succeeds.

A refused call is never taken at its word alone: the branch is read first (money may have settled
meanwhile, or already been returned), and only a state that ends the step moves the saga on.
"""

from __future__ import annotations

from datetime import datetime

from hirepay_platform.errors import ErrorKind, HirepayError
from jobs.domain.model import Job, PaymentStatus, Transition
from jobs.domain.posting_saga import (
    Saga,
    SagaError,
    SagaState,
    TryResult,
    TryState,
    client_error,
    is_permanent_confirm_error,
)
from jobs.service_layer import metrics
from jobs.service_layer.deps import Deps
from jobs.service_layer.posting.activation import NOT_ACTIVATED
from jobs.service_layer.posting.records import fail_job, finish, retry_later

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


async def confirm(saga: Saga, deps: Deps) -> bool:
    """Confirm (Capture / ConfirmHold) until it succeeds; True when the saga moved on."""
    participant = deps.participants.for_method(saga.method)
    try:
        result = await participant.confirm(saga)
    except HirepayError as exc:
        return await _confirm_refused(saga, exc, deps)
    return await _confirmed(saga, result, deps)


async def _confirm_refused(saga: Saga, error: HirepayError, deps: Deps) -> bool:
    """Look at the branch before deciding: still reserved means the refusal may pass (retry);
    already taken means Confirm is done; only a released reservation is final."""
    if not is_permanent_confirm_error(error):
        await retry_later(saga.id, "confirm", error, deps)
        return False
    try:
        seen = await deps.participants.for_method(saga.method).inspect(saga)
    except HirepayError as inner:
        await retry_later(saga.id, "confirm", inner, deps)
        return False
    if seen.state in _CONFIRM_MAY_PASS:
        await retry_later(saga.id, "confirm", error, deps)
        return False
    if seen.state is TryState.CAPTURED:
        return await _confirmed(saga, seen, deps)
    # The reservation is gone for good (voided, expired): the job must not stay live.
    metrics.PARTICIPANT_FAILURES.labels("confirm", error.reason).inc()
    await _take_down(saga, error, deps)
    return True


async def _take_down(saga: Saga, error: HirepayError, deps: Deps) -> None:
    """A Confirm that can never succeed: the live job goes back to payment_failed, Cancel follows."""
    uow = deps.uow
    transitions: list[Transition] = []
    async with uow:
        now = deps.clock()
        current = await uow.sagas.get(saga.id, for_update=True)
        if current is None or current.state is not SagaState.CONFIRMING:
            return
        job = await uow.jobs.get(current.job_id, for_update=True)
        fail_job(job, current, error.reason, refunded=False, now=now)
        current.start_cancelling(SagaError.of(client_error(error, current.method, current.id)), now)
        if job is not None:
            transitions = list(job.pending)
            await uow.jobs.save(job)
        await uow.sagas.save(current)
        await uow.sagas.log(current.id, "cancelling", f"confirm refused: {error.reason}", now)
        await uow.commit()
    metrics.record_transitions(transitions)


async def _confirmed(saga: Saga, result: TryResult, deps: Deps) -> bool:
    """Record a successful Confirm: the job's payment is completed (or a requested refund starts)."""
    uow = deps.uow
    async with uow:
        now = deps.clock()
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
            current.start_refunding(now)
        else:
            finish(current, SagaState.COMPLETED, now)
        await uow.sagas.save(current)
        await uow.sagas.log(current.id, current.state.value, "confirmed", now)
        await uow.commit()
    return True


async def cancel(saga: Saga, deps: Deps) -> bool:
    """Cancel (Void / CancelHold) until it succeeds; money found captured is refunded instead."""
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
        current = await uow.sagas.get(saga.id, for_update=True)
        if current is None or current.state is not SagaState.CANCELLING:
            return True
        if result.provider_state:
            current.provider_state = result.provider_state
        if result.state is TryState.CAPTURED:
            current.start_refunding(now, reason=NOT_ACTIVATED)
            current.captured = True
        else:
            # Money that settled after the Void and was returned by payments counts as refunded.
            refunded = bool(current.refund_reason) or result.state is TryState.REFUNDED
            job = await uow.jobs.get(current.job_id, for_update=True)
            if job is not None and job.saga_id == current.id:
                _settle_cancelled(job, refunded=refunded, now=now)
                await uow.jobs.save(job)
            finish(current, SagaState.REFUNDED if refunded else SagaState.FAILED, now)
        await uow.sagas.save(current)
        await uow.sagas.log(current.id, current.state.value, f"cancel: {result.state}", now)
        await uow.commit()
    return True


def _settle_cancelled(job: Job, *, refunded: bool, now: datetime) -> None:
    """The job's payment status once its Cancel is done."""
    if refunded:
        job.payment_status = PaymentStatus.REFUNDED
    elif job.payment_status is PaymentStatus.PENDING:
        # A job cancelled while its payment was pending: nothing was taken (if money still
        # arrives, the saga reopens to refund it, see observe).
        job.payment_status = PaymentStatus.FAILED
    job.updated_at = now


async def refund(saga: Saga, deps: Deps) -> bool:
    """Refund taken money (PAY-7 after a failed activation, PAY-13 on cancellation)."""
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
        current = await uow.sagas.get(saga.id, for_update=True)
        if current is None or current.state is not SagaState.REFUNDING:
            return True
        job = await uow.jobs.get(current.job_id, for_update=True)
        if job is not None and job.saga_id == current.id:
            job.payment_status = PaymentStatus.REFUNDED
            job.updated_at = now
            await uow.jobs.save(job)
        finish(current, SagaState.REFUNDED, now)
        await uow.sagas.save(current)
        await uow.sagas.log(current.id, "refunded", f"{amount} {current.currency}", now)
        await uow.commit()
    return True
