"""Use cases of the saga's background drivers: settlement events (PAY-9) and crash recovery."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from jobs.domain import commands
from jobs.domain.posting_saga import (
    BRANCH_ID,
    Saga,
    SettlementEvent,
    SettlementStep,
    drives_after_settlement,
    settlement_step,
)
from jobs.service_layer import metrics
from jobs.service_layer.deps import Deps
from jobs.service_layer.marketplace import job_payments, refund_failures, refunds_at_provider
from jobs.service_layer.posting.activation import observe
from jobs.service_layer.posting.driver import drive
from jobs.service_layer.posting.leases import release
from jobs.service_layer.posting.refunded_at_provider import end_refunded_posting

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
    metrics.count(metrics.SETTLEMENT_EVENTS, event.type, str(applied).lower())
    return applied


async def apply_marketplace_events(
    cmd: commands.ApplySettlementEvents, deps: Deps
) -> AsyncIterator[tuple[SettlementEvent, bool]]:
    """Apply a burst of the marketplace stream's events (offer payments) in their order, yielding
    each once its effect is durable: a refund made at the provider unwinds its engagement's
    escrow (refunds_at_provider), a refund of it failed after success is reversed
    (refund_failures); the others (authorized, captured, voided: the offer's own
    calls, answered already) ask nothing and cost no statement."""
    for event in cmd.events:
        applied = False
        if refunds_at_provider.is_offer_refund(event):
            applied = await refunds_at_provider.apply_refund_event(event, deps.fresh())
        elif refund_failures.is_offer_refund_failure(event):
            applied = await refund_failures.apply_refund_failed_event(event, deps.fresh())
        metrics.count(metrics.SETTLEMENT_EVENTS, event.type, str(applied).lower())
        yield event, applied


async def record_cursor(cmd: commands.RecordSettlementCursor, deps: Deps) -> None:
    """Remember how far the consumer has applied the stream (it resumes after it)."""
    async with deps.uow as uow:
        await uow.settlements.advance(cmd.consumer, cmd.cursor)
        await uow.commit()


def _saga_event(event: SettlementEvent) -> bool:
    """Whether the event is about a pay-to-post or offer saga's branch (not a job payment)."""
    return (
        event.metadata.get("type") != job_payments.JOB_PAYMENT
        and event.branch_id in ("", BRANCH_ID)
        and bool(event.global_tx_id)
    )


async def apply_settlement_events(
    cmd: commands.ApplySettlementEvents, deps: Deps
) -> AsyncIterator[tuple[SettlementEvent, bool]]:
    """Apply a burst of settlement events in their order, yielding each one (and whether it
    changed its saga) once its effect is durable: the caller may then record the stream position.

    The sagas of the whole burst are read with one statement, and the domain decides which events
    change nothing (settlement_step): those cost no statement at all; the others are applied one by
    one as apply_settlement_event would, under their saga's lock (issue 13: most events are the
    authorized and captured events of postings their requests have finished). An event whose
    saga an earlier event of the burst acted on reads it again (it may have moved since)."""
    saga_events = [e for e in cmd.events if _saga_event(e)]
    # Events of postings this process completed moments ago that ask nothing of them are judged
    # without a read (CompletedPostings): a burst of only those costs no statement.
    completed = deps.completed
    known = (
        set()
        if completed is None
        else {e.event_id for e in saga_events if completed.nothing_left(e)}
    )
    if completed is not None and len(known) < len(saga_events):
        # The others' postings may still be on their way here: a request of this process that
        # drives one is waited for, and then its events are judged the same way (finished.py).
        unknown = [e for e in saga_events if e.event_id not in known]
        if await completed.wait_for_requests(unknown):
            known.update(e.event_id for e in unknown if completed.nothing_left(e))
    saga_ids = [e.global_tx_id for e in saga_events if e.event_id not in known]
    read: dict[str, Saga] = {}
    if saga_ids:
        async with deps.uow as uow:
            read = await uow.sagas.get_many(saga_ids)
    acted: set[str] = set()
    for event in cmd.events:
        applied = False
        if not _saga_event(event):
            if event.metadata.get("type") == job_payments.JOB_PAYMENT:
                applied = await job_payments.apply_job_payment_event(event, deps.fresh())
        elif event.global_tx_id in acted:
            applied = await _apply(event, deps.fresh())
        elif event.event_id in known:
            pass  # completed here, and the event asks nothing of it
        else:
            saga = read.get(event.global_tx_id)
            step = settlement_step(saga, event, deps.clock())
            if saga is not None and step is not SettlementStep.NONE:
                acted.add(saga.id)
                applied = await _act(saga, event, step, deps.fresh())
        metrics.count(metrics.SETTLEMENT_EVENTS, event.type, str(applied).lower())
        yield event, applied


async def _apply(event: SettlementEvent, deps: Deps) -> bool:
    """What the event says about its saga, then drive the saga unless its request does."""
    async with deps.uow as uow:
        saga = await uow.sagas.get(event.global_tx_id)
    step = settlement_step(saga, event, deps.clock())
    if saga is None or step is SettlementStep.NONE:
        return False
    return await _act(saga, event, step, deps)


async def _act(saga: Saga, event: SettlementEvent, step: SettlementStep, deps: Deps) -> bool:
    """Take the settlement step on the saga as read: record the news under the saga's lock
    (OBSERVE), then drive the saga unless its request does or the event asks nothing of it."""
    if step is SettlementStep.REFUNDED_AT_PROVIDER:
        return await end_refunded_posting(saga.id, event, deps)
    applied = False
    current: Saga | None = saga
    if step is SettlementStep.OBSERVE:
        applied = await observe(saga.id, event.result, deps, source=event.type)
        async with deps.uow as uow:
            current = await uow.sagas.get(saga.id)
        if not drives_after_settlement(current, event, deps.clock()):
            return applied
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
