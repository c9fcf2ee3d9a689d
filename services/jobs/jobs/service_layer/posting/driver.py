"""Drive a saga as far as it can go now, from its last persisted state (requests, events, recovery).

Every step re-reads the saga row under `FOR UPDATE` and checks its state, so two drivers racing on
one saga cannot apply a step twice; participant calls are idempotent on the saga's branch.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from hirepay_platform.errors import HirepayError
from jobs.domain.errors import PaymentExpired, PaymentTimedOut
from jobs.domain.posting_saga import FINAL_STATES, Saga, SagaKind, SagaState, client_error
from jobs.service_layer.answers import answer_for, answer_to_snapshot
from jobs.service_layer.deps import Deps
from jobs.service_layer.marketplace.offer_saga import offer_step
from jobs.service_layer.posting.activation import fail_before_activation, observe, send_try
from jobs.service_layer.posting.completion import cancel, confirm, refund
from jobs.service_layer.posting.leases import release
from jobs.service_layer.posting.records import StoredRows, retry_later, schedule_poll

log = logging.getLogger(__name__)

# At most this many steps per drive: what is left is for the next driver that is due.
MAX_STEPS = 8


async def drive(
    saga_id: str,
    deps: Deps,
    *,
    poll: bool,
    answer: bool = True,
    saga: Saga | None = None,
    stored: StoredRows | None = None,
) -> Saga | None:
    """Advance a saga as far as it can go now (at most a few steps); `poll` also asks the
    participant about a saga waiting for settlement (recovery), and re-sends a lost Try.
    `answer`: then store the request's answer once the saga is settled (False: the request
    driving it answers itself, see answer_and_release). `saga`: the saga as its caller has just
    committed it (it is not read again); `stored`: its rows as its caller stored them (see
    send_try).

    Returns the saga as stored when the drive ended on it (final, or its steps used up right
    after one committed it); None when that is not known (gone, stopped by a step that could not
    go on, or moved by one that did not hand it on)."""
    uow = deps.uow
    current = saga  # the saga as stored now; None: read it
    seen: Saga | None = saga  # the last version of it seen (for the answer below)
    for _ in range(MAX_STEPS):
        if current is None:
            async with uow:
                current = await uow.sagas.get(saga_id)
            seen = current
        if current is None or current.state in FINAL_STATES:
            break
        # Each step re-reads the row under lock: a step taken from a stale copy is a no-op.
        moved = await _step(current, deps.clock(), deps, poll=poll, stored=stored)
        if moved is False:
            current = None
            break
        # A step that committed the saga hands it on; one that only moved it (True) re-reads.
        current = moved if isinstance(moved, Saga) else None
        seen = current or seen
    # An offer saga has no stored answer, and a stored answer is never replaced: nothing to lock.
    if answer and seen is not None and seen.kind is SagaKind.POSTING and not seen.answered:
        await ensure_answer(saga_id, deps, settled_only=True)
    return current


async def _step(
    saga: Saga, now: datetime, deps: Deps, *, poll: bool, stored: StoredRows | None = None
) -> Saga | bool:
    """One step of the saga from its state: the saga as the step committed it, True when it
    moved on otherwise, False when it cannot go further now."""
    if saga.kind is SagaKind.OFFER:
        return await offer_step(saga, now, deps, poll=poll)
    if saga.state is SagaState.CONFIRMING:
        return await confirm(saga, deps, stored)
    if saga.state is SagaState.CANCELLING:
        return await cancel(saga, deps)
    if saga.state is SagaState.REFUNDING:
        return await refund(saga, deps)
    if not poll:
        return False
    if saga.state is SagaState.TRYING:
        await _resume_try(saga, now, deps)
        return True
    return await _poll_settlement(saga, now, deps)


async def _resume_try(saga: Saga, now: datetime, deps: Deps) -> None:
    """A saga left in TRYING (its request died): past its deadline it is cancelled, else the
    Try is sent again (idempotent on the branch) to learn its answer."""
    if now >= saga.deadline_at:
        timeout = PaymentTimedOut(
            "the payment did not complete in time; nothing was posted",
            metadata={"payment_id": saga.payment_id},
        )
        await fail_before_activation(
            saga.id, client_error(timeout, saga.method, saga.id), deps, step="deadline"
        )
    else:
        await send_try(saga, deps)


async def _poll_settlement(saga: Saga, now: datetime, deps: Deps) -> bool:
    """Ask the participant about a saga waiting for settlement (a backstop for missed events)."""
    deadline = saga.created_at + timedelta(seconds=deps.config.settlement_deadline_seconds)
    if now >= deadline:
        expired = PaymentExpired(
            "the payment was not completed in time; nothing was posted",
            metadata={"payment_id": saga.payment_id, "transaction_id": saga.id},
        )
        await fail_before_activation(saga.id, expired, deps, step="settlement_deadline")
        return True
    try:
        result = await deps.participants.for_method(saga.method).inspect(saga)
    except HirepayError as exc:
        await retry_later(saga.id, "poll", exc, deps)
        return False
    if not await observe(saga.id, result, deps, source="poll"):
        await schedule_poll(saga.id, deps)
        return False
    return True


async def ensure_answer(saga_id: str, deps: Deps, *, settled_only: bool = False) -> None:
    """Store the answer describing the job now, unless one (or an error) is stored already.

    `settled_only`: only once the saga is final or waiting for settlement (a driver other than
    the request, e.g. recovery after a crash, must not answer for a request still in flight)."""
    uow = deps.uow
    async with uow:
        saga, job = await uow.sagas.lock_with_job(saga_id, lock_job=False)
        if saga is None or saga.answered or saga.kind is not SagaKind.POSTING:
            return
        if settled_only and not (saga.state.final or saga.state is SagaState.AWAITING_SETTLEMENT):
            return
        if job is None:
            return
        saga.response = answer_to_snapshot(answer_for(saga, job))
        saga.updated_at = deps.clock()
        await uow.sagas.save(saga)
        await uow.commit()


async def answer_and_release(saga_id: str, deps: Deps, owner: str) -> Saga | None:
    """The end of the request that drove a saga, in one transaction: store the answer describing
    the job now (unless an answer or an error is stored already) and give up `owner`'s lease, so
    another driver may take what is left (a retried Confirm, a settlement poll). The saga as
    stored, None if it is gone."""
    uow = deps.uow
    async with uow:
        saga, job = await uow.sagas.lock_with_job(saga_id, lock_job=False)
        if saga is None:
            return None
        changed = saga.release_lease(owner)
        if not saga.answered and saga.kind is SagaKind.POSTING and job is not None:
            saga.response = answer_to_snapshot(answer_for(saga, job))
            saga.updated_at = deps.clock()
            changed = True
        if changed:
            await uow.sagas.save(saga)
            await uow.commit()
    return saga


async def drive_leased(saga_id: str, deps: Deps, owner: str) -> None:
    """Drive a saga whose lease `owner` took (e.g. CancelJob), then give the lease up; a failure
    is left to the recovery worker (the saga is due, and the lease expires if we die)."""
    try:
        await drive(saga_id, deps, poll=False)
    except Exception:
        log.exception("saga %s: driving for %s failed; recovery retries", saga_id, owner)
    finally:
        await release(saga_id, deps, owner)
