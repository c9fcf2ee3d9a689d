"""Driving an engagement's money step (complete, cancel, resolve, a coin job payment's funding) to
its end: the barrier is the step row (insert-first on engagement + kind, written in the
transaction that decides the change), the transfer ids are deterministic, and every call is
idempotent, so the request that decided it, a twin request and the recovery worker may all drive
the same step: the ledger applies it once.

A card refund goes first to payments (Refund, idempotent on the step's request id), then its
booking `payment:<pid>:refund:<refund_id>` (escrow / revenue -> provider clearing).

What the provider already gave back (a refund made at the provider, booked as owed on the
engagement's receivable) is not refunded again: the step is netted against it (MoneyStep.net)
when decided, and again when payments refuses its refund (PAY-11's typed refusals, nothing
refunded by them: REFUND_EXCEEDS_CAPTURED, more than is left to refund, nothing left included;
PAYMENT_NOT_REFUNDABLE, the provider refusing it otherwise, e.g. refunded there already) - the netted part settles the debt on the ledger, and the
provider is asked only for the rest, under a new request id. A refusal explained by a refund
made at the provider that payments lists and jobs has not booked yet, or by a refund of the
step's own that succeeded under an earlier request id (the customer has the money), stays a
retried step (the refund's event nets it once applied; the auditor's `escrow_step_stuck` if it
never is).

Any other such refusal is the provider refusing the refund outright (Stripe's
charge_already_refunded, amount_too_large, a payment method that cannot be refunded; payments
recorded it FAILED under the step's request id and answers every retry the same): the step ends
REFUND_REFUSED instead of being retried forever. What it gave back goes to the engagement's
receivable (MoneyStep.refuse_refund), owed to the customer, counted in
`hirepay_escrow_refunds_refused_total{step}` (alert HirepayEscrowRefundRefused) and reported by
the auditor as `escrow_refund_payable` until an operator settles it (marketplace.receivables).
Transient errors (payments or the provider not answering, a refund outcome unknown) keep
retrying. The change of legs is committed before anything is posted and the step stays pending
until they are: a crash in between is finished by recovery (payments answers the same refusal
under the same request id again)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from hirepay_platform.errors import HirepayError
from hirepay_platform.reasons import FailureReason
from jobs.domain.escrow import MoneyStep, StepKind, StepState
from jobs.domain.events import EventType
from jobs.domain.marketplace import engagement_transfer_id
from jobs.service_layer import metrics
from jobs.service_layer.deps import Deps
from jobs.service_layer.notifications import record_event

log = logging.getLogger(__name__)

REFUND_FAILED = "FAILED"
REFUND_SUCCEEDED = "SUCCEEDED"
# payments' refusals of a refund the payment has no longer left to give (PAY-11).
REFUSED_AS_REFUNDED = frozenset({"REFUND_EXCEEDS_CAPTURED", "PAYMENT_NOT_REFUNDABLE"})
# payments' answer that the provider declined the refund (a FAILED refund answered as such).
REFUND_FAILED_REASON = "REFUND_FAILED"
DEFINITIVE_REFUSALS = REFUSED_AS_REFUNDED | {REFUND_FAILED_REASON}

# What happens once a step is done or refused (the funding of a coin job payment assigns or
# cancels its engagement); registered by the module that owns the step's kind.
AfterStep = Callable[[MoneyStep, Deps], Awaitable[None]]
_AFTER: dict[StepKind, AfterStep] = {}


def on_settled(kind: StepKind, hook: AfterStep) -> None:
    _AFTER[kind] = hook


def _metadata(step: MoneyStep) -> dict[str, str]:
    return {
        "engagement_id": step.engagement_id,
        "step": step.kind.value,
        "description": f"Engagement {step.engagement_id}: {step.kind.value}",
    }


async def _load(engagement_id: str, kind: StepKind, deps: Deps) -> MoneyStep | None:
    async with deps.uow as uow:
        return await uow.money_steps.get(engagement_id, kind)


async def _refund_card(step: MoneyStep, deps: Deps) -> MoneyStep:
    """The provider refund of a card-funded step, recorded on the step once payments answered."""
    assert deps.card_refunds is not None, "card refunds need payments (Deps.card_refunds)"
    outcome = await deps.card_refunds.refund(
        step.payment_id, step.refund_minor, step.request_id, f"engagement_{step.kind.value}"
    )
    if outcome.status == REFUND_FAILED:
        raise HirepayError(
            f"the provider refused the refund {outcome.refund_id}", reason=REFUND_FAILED_REASON
        )
    async with deps.uow as uow:
        current = await uow.money_steps.get(step.engagement_id, step.kind, for_update=True)
        if current is None:
            return step
        if not current.refund_id:
            current.refunded(outcome.refund_id, deps.clock())
            await uow.money_steps.save(current)
            await uow.commit()
        return current


async def _net(step: MoneyStep, deps: Deps) -> MoneyStep | None:
    """payments refused the step's refund as more than is left: net it against the refunds made
    at the provider booked since (under the step's lock; one netting at a time). The step to
    post now, or None when nothing explains the refusal (and no other driver changed the step)."""
    async with deps.uow as uow:
        current = await uow.money_steps.get(step.engagement_id, step.kind, for_update=True)
        if current is None:
            return None
        if current.net(await uow.escrow_refunds.for_engagement(step.engagement_id), deps.clock()):
            await uow.money_steps.save(current)
            await uow.commit()
            log.info(
                "money step %s/%s: %d netted against refunds made at the provider, %d to refund",
                step.engagement_id,
                step.kind.value,
                current.netted_minor,
                current.refund_minor,
            )
            return current
    changed = (current.legs, current.refund_id) != (step.legs, step.refund_id)
    return current if changed else None


async def _refusal_explained(step: MoneyStep, deps: Deps) -> bool:
    """Whether payments lists a refund that may explain the refusal: one of the step's own that
    succeeded under an earlier request id (its answer lost before the step recorded it: the
    customer has the money), or one made at the provider that jobs has not booked yet (its event
    not applied: it nets the step once booked)."""
    assert deps.card_refunds is not None, "card refunds need payments (Deps.card_refunds)"
    _, refunds = await deps.card_refunds.refunds_of(step.payment_id)
    own = engagement_transfer_id(step.engagement_id, step.kind.value)
    if any(r.status == REFUND_SUCCEEDED and r.request_id.startswith(own) for r in refunds):
        return True
    outside = {r.refund_id for r in refunds if r.outside_escrow}
    if not outside:
        return False
    async with deps.uow as uow:
        booked = {r.refund_id for r in await uow.escrow_refunds.for_engagement(step.engagement_id)}
    return bool(outside - booked)


async def _refuse(step: MoneyStep, error: HirepayError, deps: Deps) -> MoneyStep | None:
    """The provider refused the step's refund outright: its legs to provider clearing go to the
    engagement's receivable (under the step's lock, once); the step to post now, or None when a
    refund at the provider not booked yet may explain the refusal (retried, netted later)."""
    if await _refusal_explained(step, deps):
        return None
    async with deps.uow as uow:
        current = await uow.money_steps.get(step.engagement_id, step.kind, for_update=True)
        if current is None:
            return None
        if (current.legs, current.refund_id) != (step.legs, step.refund_id):
            return current  # another driver changed it meanwhile (netted, refunded, refused)
        now = deps.clock()
        # A refund at the provider booked since the step was netted (its event applied
        # meanwhile) explains the refusal: netted, not refused.
        if current.net(await uow.escrow_refunds.for_engagement(step.engagement_id), now):
            await uow.money_steps.save(current)
            await uow.commit()
            return current
        refused = current.refund_minor
        if not current.refuse_refund(f"{error.reason}: {error}", now):
            return current
        await uow.money_steps.save(current)
        engagement = await uow.engagements.get(step.engagement_id)
        if engagement is not None:
            data = {
                "engagementId": engagement.id,
                "customerId": engagement.customer_id,
                "contractorId": engagement.contractor_id,
                "unit": engagement.unit,
                "step": step.kind.value,
                "refusedMinor": refused,
                "reason": error.reason,
            }
            await record_event(
                uow, EventType.ENGAGEMENT_REFUND_REFUSED, step.transfer_id, now, data
            )
        await uow.commit()
    metrics.count(metrics.ESCROW_REFUNDS_REFUSED, step.kind.value)
    log.warning(
        "engagement %s: the provider refused the %s refund of %d outright (%s): booked to its"
        " receivable, owed to the customer for operators to pay back",
        step.engagement_id,
        step.kind.value,
        refused,
        error.reason,
    )
    return current


async def _post(step: MoneyStep, deps: Deps) -> None:
    assert deps.escrow is not None, "money steps need the wallet (Deps.escrow)"
    if step.needs_refund:
        try:
            step = await _refund_card(step, deps)
        except HirepayError as exc:
            if exc.reason not in DEFINITIVE_REFUSALS:
                raise
            netted = await _net(step, deps) if exc.reason in REFUSED_AS_REFUNDED else None
            if netted is None:
                netted = await _refuse(step, exc, deps)
            if netted is None:
                raise
            step = await _refund_card(netted, deps) if netted.needs_refund else netted
    await deps.escrow.post(step.transfer_id, step.ledger_legs, _metadata(step))
    if step.refund_legs:
        metadata = {**_metadata(step), "payment_id": step.payment_id, "refund_id": step.refund_id}
        await deps.escrow.post(step.refund_transfer_id, step.refund_legs, metadata)


async def _settle(step: MoneyStep, deps: Deps, error: HirepayError | None) -> MoneyStep:
    """Record the outcome: done, refused for good (a coin funding short of coins), or due again
    after a backoff (anything else: a participant down, a lost answer)."""
    async with deps.uow as uow:
        now = deps.clock()
        current = await uow.money_steps.get(step.engagement_id, step.kind, for_update=True)
        if current is None or current.state is not StepState.PENDING:
            return current or step
        if error is None:
            current.done(now)
        elif step.kind is StepKind.FUND and error.reason == FailureReason.INSUFFICIENT_FUNDS:
            current.refused(error.reason, now)
        else:
            config = deps.config
            delay = min(
                config.retry_max_seconds, config.retry_base_seconds * 2 ** min(current.attempts, 20)
            )
            current.retry_at(now + timedelta(seconds=delay), f"{error.reason}: {error}", now)
        await uow.money_steps.save(current)
        await uow.commit()
    return current


async def drive(engagement_id: str, kind: StepKind, deps: Deps) -> MoneyStep | None:
    """Drive one step once: post it (idempotent) and record the outcome; then its kind's hook."""
    step = await _load(engagement_id, kind, deps)
    if step is None:
        return None
    if step.state is StepState.PENDING:
        error: HirepayError | None = None
        try:
            await _post(step, deps)
        except HirepayError as exc:
            log.info("money step %s/%s not done yet: %r", engagement_id, kind.value, exc)
            error = exc
        step = await _settle(step, deps, error)
    hook = _AFTER.get(kind)
    if hook is not None and step.state is not StepState.PENDING:
        await hook(step, deps)
    return step


async def drive_card_refunds(engagement_id: str, deps: Deps) -> None:
    """Net an engagement's pending card refund steps against the refunds made at the provider
    and drive them now (one was just booked owed: payments would refuse the step's refund for
    want of money left until it nets it, or refund the customer twice)."""
    async with deps.uow as uow:
        steps = await uow.money_steps.for_engagement(engagement_id)
    for step in steps:
        if step.state is StepState.PENDING and step.needs_refund:
            await _net(step, deps)
            await drive(engagement_id, step.kind, deps)


async def recover_due(deps: Deps, limit: int = 50) -> int:
    """Drive the steps left pending past their due time (several replicas: each step is leased
    FOR UPDATE SKIP LOCKED and moved past the lease, so one worker takes it at a time)."""
    async with deps.uow as uow:
        now = deps.clock()
        lease = now + timedelta(seconds=deps.config.lease_seconds)
        due = await uow.money_steps.claim_due(now, lease, limit)
        await uow.commit()
    for step in due:
        try:
            await drive(step.engagement_id, step.kind, deps.fresh())
        except Exception:
            log.exception("recovering money step %s/%s failed", step.engagement_id, step.kind)
    return len(due)
