"""The saga up to its Confirm: send the Try, apply what the participant says, or give up.

A reservation is checked against everything that could stop the job going live before any money is
taken: a job that cannot go live has its reservation voided (never charged); one that can moves the
saga to CONFIRMING, and the job goes live only after the Confirm took the money (completion.py).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from hirepay_platform.errors import ErrorKind, HirepayError
from hirepay_platform.reasons import FailureReason
from jobs.domain.errors import ActivationFailed, PaymentCancelled
from jobs.domain.model import Job, PaymentStatus, Transition
from jobs.domain.posting_saga import (
    BEFORE_ACTIVATION,
    Saga,
    SagaError,
    SagaState,
    TryResult,
    TryState,
    client_error,
)
from jobs.service_layer import metrics
from jobs.service_layer.answers import answer_for, answer_to_snapshot
from jobs.service_layer.config import JobsConfig
from jobs.service_layer.deps import Deps
from jobs.service_layer.posting.records import (
    StoredRows,
    assuming,
    fail_job,
    nothing_written,
)

log = logging.getLogger(__name__)

# What the refund of money taken for a job that never went live is called (PAY-7).
NOT_ACTIVATED = "job_not_activated"

_RESERVED = frozenset({TryState.RESERVED, TryState.CAPTURED})
_PENDING = frozenset({TryState.ACTION_REQUIRED, TryState.PROCESSING, TryState.UNKNOWN})
_FAILED = frozenset({TryState.FAILED, TryState.CANCELLED, TryState.REFUNDED})


async def send_try(saga: Saga, deps: Deps, stored: StoredRows | None = None) -> Saga | None:
    """Send the Try; whatever comes back (or does not) is persisted before anything else.

    The saga as it stands once the answer is applied (the driver goes on from it without reading
    it again); None when it must be read again. `stored`: the rows as the request stored them
    (assumed by the step that applies the answer, and then as it leaves them)."""
    participant = deps.participants.for_method(saga.method)
    try:
        result = await participant.try_(saga)
    except HirepayError as exc:
        metrics.count(metrics.PARTICIPANT_FAILURES, "try", exc.reason)
        log.info("saga %s: try failed: %r", saga.id, exc)
        await fail_before_activation(
            saga.id, client_error(exc, saga.method, saga.id), deps, step="try_failed"
        )
        return None
    _, observed = await _observe(saga.id, result, deps, source="try", stored=stored)
    return observed


def failure_error(result: TryResult, saga: Saga) -> HirepayError:
    """The client's error for a payment the participant reports failed or cancelled."""
    metadata = {"payment_id": result.payment_id or saga.payment_id, "transaction_id": saga.id}
    if result.failure_code:
        metadata["code"] = result.failure_code
    if result.state is TryState.CANCELLED:
        return PaymentCancelled("the payment was cancelled; nothing was charged", metadata=metadata)
    return HirepayError(
        "the payment failed; nothing was charged",
        reason=result.failure_reason or FailureReason.PAYMENT_DECLINED,
        kind=ErrorKind.FAILED_PRECONDITION,
        metadata=metadata,
    )


async def observe(saga_id: str, result: TryResult, deps: Deps, *, source: str) -> bool:
    """Apply what a participant says about the branch (a Try answer, an event or a poll).

    Returns True when the saga changed state.
    """
    changed, _ = await _observe(saga_id, result, deps, source=source)
    return changed


async def _observe(
    saga_id: str, result: TryResult, deps: Deps, *, source: str, stored: StoredRows | None = None
) -> tuple[bool, Saga | None]:
    """observe, and the saga as it stands after it (None if gone)."""
    return await assuming(
        stored, lambda assumed: _observe_on(saga_id, result, deps, source, stored, assumed)
    )


async def _observe_on(
    saga_id: str,
    result: TryResult,
    deps: Deps,
    source: str,
    stored: StoredRows | None,
    assumed: object | None,
) -> tuple[bool, Saga | None]:
    uow = deps.uow
    transitions: list[Transition] = []
    async with uow:
        now = deps.clock()
        saga, job = await uow.sagas.lock_with_job(saga_id, assumed=assumed)
        if saga is None:
            return False, None
        if saga.is_stale(result):
            # Behind what the saga records (answers and events arrive out of order, e.g. the
            # authorization's event after the capture's): it changes nothing, nothing is written.
            nothing_written(assumed)
            return False, saga
        before = saga.state
        noted = _note_payment(saga, job, result)
        if saga.state in BEFORE_ACTIVATION:
            _apply_try_outcome(saga, job, result, deps.config, now)
        elif saga.state in (SagaState.CANCELLING, SagaState.FAILED) and (
            result.state is TryState.CAPTURED
        ):
            _refund_late_money(saga, job, now)
        changed = saga.state is not before
        # Past the Try only a state change or a new fact is worth a write (a late or repeated
        # answer, e.g. the settlement event of a step the request already took, is not).
        if changed or noted or (before in BEFORE_ACTIVATION and result.payment_id):
            saga.updated_at = now
            if job is not None:
                transitions = list(job.pending)
                await uow.jobs.save(job)
            await uow.sagas.save(saga)
            if changed:
                await uow.sagas.log(saga.id, str(saga.state), f"{source}: {result.state}", now)
            await uow.commit()
        else:
            nothing_written(assumed)
        if stored is not None:
            stored.rows = uow.sagas.stored(saga_id)
    metrics.record_transitions(transitions)
    return changed, saga


def _note_payment(saga: Saga, job: Job | None, result: TryResult) -> bool:
    """Record the payment's id and provider state on the saga and its job (locked, None if
    gone); whether anything was noted (nothing is written for an answer that tells nothing new)."""
    noted = False
    if result.payment_id and not saga.payment_id:
        saga.payment_id = result.payment_id
        noted = True
    if saga.note_provider_state(result.provider_state):
        noted = True
    if job is not None and job.saga_id == saga.id and saga.payment_id and not job.payment_id:
        # The job names its payment as soon as it is known, so a client can resume (PAY-12).
        job.payment_id = saga.payment_id
        noted = True
    return noted


def _apply_try_outcome(
    saga: Saga, job: Job | None, result: TryResult, config: JobsConfig, now: datetime
) -> None:
    """Move a saga that has not reached its Confirm by the Try's outcome."""
    if result.state in _RESERVED:
        saga.captured = result.state is TryState.CAPTURED
        _check_before_confirm(saga, job, now)
        return
    if result.state in _PENDING:
        poll_at = now + timedelta(seconds=config.settlement_poll_seconds)
        saga.await_settlement(result.next_action_url, poll_at, now)
        if not saga.answered and job is not None:
            saga.response = answer_to_snapshot(answer_for(saga, job))
    elif result.state in _FAILED:
        error = failure_error(result, saga)
        fail_job(job, saga, error.reason, refunded=False, now=now)
        saga.start_cancelling(SagaError.of(error), now)
        saga.next_attempt_at = now


def _check_before_confirm(saga: Saga, job: Job | None, now: datetime) -> None:
    """Reserved: take the money only if the job can then go live (PAY-4). A job that cannot is
    voided, never charged; money a settled payment already took is refunded (PAY-7)."""
    problem = "the job no longer exists" if job is None else job.activation_problem(saga.id)
    if not problem:
        saga.start_confirming(now)
        return
    error = ActivationFailed(
        f"the job could not be activated: {problem}; "
        + ("the payment is refunded" if saga.captured else "the payment is voided, nothing taken"),
        metadata={
            "job_id": saga.job_id,
            "payment_id": saga.payment_id,
            "transaction_id": saga.id,
            "refunded": str(saga.captured).lower(),
        },
    )
    fail_job(job, saga, error.reason, refunded=saga.captured, now=now)
    if saga.captured:
        saga.start_refunding(now, reason=NOT_ACTIVATED)
        saga.failure = saga.failure or SagaError.of(error)
    else:
        saga.start_cancelling(SagaError.of(error), now)
    saga.next_attempt_at = now


def _refund_late_money(saga: Saga, job: Job | None, now: datetime) -> None:
    """Money arrived after the saga gave up (a late bank transfer): give it back (PAY-7)."""
    saga.start_refunding(now, reason=NOT_ACTIVATED)
    saga.captured = True
    saga.next_attempt_at = now
    if job is not None and job.saga_id == saga.id:
        job.payment_status = PaymentStatus.PENDING


async def fail_before_activation(
    saga_id: str, error: HirepayError, deps: Deps, *, step: str
) -> None:
    """Give up a saga that never reached activation: job payment_failed, then Cancel the Try.

    The Cancel is sent even when the Try failed or timed out, because the Try may have happened."""
    uow = deps.uow
    transitions: list[Transition] = []
    async with uow:
        now = deps.clock()
        saga, job = await uow.sagas.lock_with_job(saga_id)
        if saga is None or saga.state not in BEFORE_ACTIVATION:
            return
        if not saga.payment_id:
            saga.payment_id = error.metadata.get("payment_id", "")
        fail_job(job, saga, error.reason, refunded=False, now=now)
        saga.start_cancelling(SagaError.of(error), now)
        saga.next_attempt_at = now
        if job is not None:
            transitions = list(job.pending)
            await uow.jobs.save(job)
        await uow.sagas.save(saga)
        await uow.sagas.log(saga.id, "cancelling", f"{step}: {error.reason}", now)
        await uow.commit()
    metrics.record_transitions(transitions)
