"""What every saga step records: the job's failed payment, a final outcome, a retry's backoff."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from hirepay_platform.errors import HirepayError, StaleRow
from jobs.domain.model import Job, JobStatus
from jobs.domain.posting_saga import Saga, SagaState
from jobs.service_layer import metrics
from jobs.service_layer.deps import Deps

log = logging.getLogger(__name__)

# The actor of the transitions the saga makes.
SAGA_ACTOR = "saga"

_T = TypeVar("_T")


class StoredRows:
    """The saga's and its job's rows as the request driving it last stored them (the saga
    repository's `stored`, opaque here), carried from one step to the next: the next step assumes
    them instead of reading them under lock (issue 13: BEGIN, the locked read and COMMIT saved;
    its writes go as one statement that commits by itself, and only if the rows are unchanged)."""

    __slots__ = ("rows",)

    def __init__(self, rows: object | None = None) -> None:
        self.rows = rows


async def assuming(stored: StoredRows | None, step: Callable[[object | None], Awaitable[_T]]) -> _T:
    """Take a saga step on the rows the request stored last, when known: `step(rows)`. Where
    they changed meanwhile (another driver moved the saga, CancelJob, an event), or the step
    would write nothing on them, it raises StaleRow having written nothing, and the step is
    taken as it always is: `step(None)`, on the rows read under lock."""
    assumed = stored.rows if stored is not None else None
    if stored is not None:
        stored.rows = None  # the step stores the rows it leaves
    if assumed is not None:
        try:
            return await step(assumed)
        except StaleRow:
            pass
    return await step(None)


def nothing_written(assumed: object | None) -> None:
    """A step that writes nothing: on assumed rows its decision is unconfirmed (StaleRow)."""
    if assumed is not None:
        raise StaleRow("a step on assumed rows wrote nothing; taken again on the rows read")


def fail_job(job: Job | None, saga: Saga, reason: str, *, refunded: bool, now: datetime) -> None:
    """Mark the saga's job payment_failed (the draft is kept), if it still waits for this saga."""
    if job is None or job.saga_id != saga.id:
        return
    if job.status is JobStatus.PENDING_PAYMENT:
        job.fail_payment(
            reason=reason,
            refunded=refunded,
            actor=SAGA_ACTOR,
            now=now,
            payment_id=saga.payment_id,
        )


def finish(saga: Saga, state: SagaState, now: datetime) -> None:
    """Move a saga to a final state and count its outcome."""
    saga.finish(state, now)
    record_outcome(saga, now)


def record_outcome(saga: Saga, now: datetime) -> None:
    """Count a saga that just reached its final state."""
    state = saga.state
    reason = saga.failure.reason if saga.failure else ""
    metrics.count(metrics.SAGA_OUTCOMES, str(state), reason, str(saga.method))
    metrics.observe(
        metrics.SAGA_DURATION, max(0.0, (now - saga.created_at).total_seconds()), str(state)
    )


async def retry_later(saga_id: str, step: str, error: HirepayError, deps: Deps) -> None:
    """A transient failure of a participant call: back off; the recovery worker retries."""
    metrics.count(metrics.PARTICIPANT_FAILURES, step, error.reason)
    log.warning("saga %s: %s failed, will retry: %r", saga_id, step, error)
    config = deps.config
    uow = deps.uow
    async with uow:
        now = deps.clock()
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


async def schedule_poll(saga_id: str, deps: Deps) -> None:
    """Look at a saga waiting for settlement again later."""
    uow = deps.uow
    async with uow:
        saga = await uow.sagas.get(saga_id, for_update=True)
        if saga is None or saga.state is not SagaState.AWAITING_SETTLEMENT:
            return
        saga.next_attempt_at = deps.clock() + timedelta(seconds=deps.config.settlement_poll_seconds)
        await uow.sagas.save(saga)
        await uow.commit()
