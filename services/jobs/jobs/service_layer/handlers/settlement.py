"""Use cases of the saga's background drivers: settlement events (PAY-9) and crash recovery."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from jobs.domain import commands
from jobs.domain.posting_saga import (
    BEFORE_ACTIVATION,
    BRANCH_ID,
    Saga,
    SagaKind,
    SagaState,
    SettlementEvent,
    TryState,
    provider_state_advances,
)
from jobs.service_layer import metrics
from jobs.service_layer.deps import Deps
from jobs.service_layer.marketplace import job_payments
from jobs.service_layer.posting.activation import observe
from jobs.service_layer.posting.driver import drive
from jobs.service_layer.posting.leases import release

log = logging.getLogger(__name__)


async def apply_settlement_event(cmd: commands.ApplySettlementEvent, deps: Deps) -> bool:
    """Apply one settlement event (PAY-9) and record its cursor; safe to apply twice."""
    event = cmd.event
    applied = False
    if event.metadata.get("type") == job_payments.JOB_PAYMENT:
        applied = await job_payments.apply_job_payment_event(event, deps)
    elif event.branch_id in ("", BRANCH_ID) and event.global_tx_id:
        applied = await _apply(event, deps)
    if cmd.record_cursor:
        await record_cursor(commands.RecordSettlementCursor(cmd.consumer, event.cursor), deps)
    metrics.SETTLEMENT_EVENTS.labels(event.type, str(applied).lower()).inc()
    return applied


async def record_cursor(cmd: commands.RecordSettlementCursor, deps: Deps) -> None:
    """Remember how far the consumer has applied the stream (it resumes after it)."""
    async with deps.uow as uow:
        await uow.settlements.advance(cmd.consumer, cmd.cursor)
        await uow.commit()


def _nothing_left(saga: Saga, event: SettlementEvent) -> bool:
    """Whether the event can no longer change its saga: the saga is final and answered, the event
    names no payment the saga does not know, and it is not money arriving for a saga that gave up
    (which is refunded, PAY-7). Most events find their saga so: the request drove it already."""
    return (
        saga.state.final
        and saga.answered
        and (not event.result.payment_id or event.result.payment_id == saga.payment_id)
        and not (saga.state is SagaState.FAILED and event.result.state is TryState.CAPTURED)
    )


def _nothing_new(saga: Saga, event: SettlementEvent) -> bool:
    """Whether the event tells the saga (as read, without a lock) nothing it does not know: past
    the Try, observe only records a new payment id or a provider state further along, or refunds
    money that arrives for a saga that gave up (PAY-7; money taken is therefore never skipped).
    A later version of the saga only knows more (its provider state only moves forward), so
    observe's locked read would find nothing to do: e.g. the authorized event of a card posting
    whose request has applied the Try's answer already, or a stale one after its capture."""
    result = event.result
    return (
        saga.state not in BEFORE_ACTIVATION
        and result.state is not TryState.CAPTURED
        and (not result.payment_id or result.payment_id == saga.payment_id)
        and not provider_state_advances(saga.provider_state, result.provider_state)
    )


async def _apply(event: SettlementEvent, deps: Deps) -> bool:
    """What the event says about its saga, then drive the saga unless its request does."""
    async with deps.uow as uow:
        saga = await uow.sagas.get(event.global_tx_id)
    # Offer sagas are driven by their requests and the recovery worker (their payments are not in
    # the jobs subsystem's stream).
    if saga is None or saga.kind is not SagaKind.POSTING or _nothing_left(saga, event):
        return False
    refund_event = event.result.state is TryState.REFUNDED
    applied = False
    current: Saga | None = saga
    if not refund_event and not _nothing_new(saga, event):
        applied = await observe(saga.id, event.result, deps, source=event.type)
        async with deps.uow as uow:
            current = await uow.sagas.get(saga.id)
    now = deps.clock()
    # A live holder (a request) drives its own saga: no second Confirm racing it.
    held = current is not None and current.held_by_live_request(now)
    # A refund event only matters to a saga waiting for its money to be returned.
    waiting = current is not None and current.state is SagaState.REFUNDING
    if not held and (waiting or not refund_event):
        # Each step locks the row again, so the saga as just read is where the drive starts.
        await drive(saga.id, deps, poll=False, saga=current)
    return applied


async def recover_due(cmd: commands.RecoverSagas, deps: Deps) -> int:
    """Lease the unfinished sagas that are due and drive each one (the recovery worker's tick).

    Leases are taken with FOR UPDATE SKIP LOCKED and expire, so several replicas share the work and
    a crashed holder's sagas are taken over once its lease runs out."""
    config = deps.config
    async with deps.uow as uow:
        now = deps.clock()
        sagas = await uow.sagas.claim_due(
            now, config.instance_id, now + timedelta(seconds=config.lease_seconds), cmd.limit
        )
        await uow.commit()

    async def recover(saga_id: str) -> None:
        # Each saga gets its own unit of work: they are driven concurrently, so one slow
        # participant call does not hold the others past their leases.
        own = deps.fresh()
        try:
            await drive(saga_id, own, poll=True)
        except Exception:
            log.exception("saga %s: recovery failed; will retry", saga_id)
        finally:
            await release(saga_id, own, config.instance_id)

    await asyncio.gather(*(recover(s.id) for s in sagas))
    async with deps.uow as uow:
        metrics.STUCK_SAGAS.set(await uow.sagas.count_stuck(deps.clock()))
    return len(sagas)
