"""Use cases of a funded engagement (ESC-7, ESC-8, ESC-11): the contractor starts, the customer
completes (fee2 to revenue, the rest to the contractor, one transfer) or cancels by the policy,
either party opens a dispute that freezes the escrow, an admin resolves it exactly once.

Each change is decided in one local transaction (lock order: the job, then the engagement, then
its dispute) that also records the money step and the marketplace event; the step is then driven
to the ledger (marketplace.money_steps), by this request or, after a crash, by recovery."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from hirepay_platform.errors import Conflict, ValidationError
from hirepay_platform.ids import new_id
from hirepay_platform.paging import decode_token, encode_token, page_size
from jobs.domain import commands
from jobs.domain.errors import NotAllowed
from jobs.domain.escrow import (
    DISPUTABLE,
    AtProviderOutcome,
    CancelPolicy,
    Dispute,
    DisputeNotFound,
    DisputeState,
    EngagementNotFound,
    EscrowFrozen,
    MoneyStep,
    Payout,
    Resolution,
    StepKind,
    cancel_payout,
    completion_payout,
    owed_to_customer,
    plan_step,
    resolution_payout,
    validate_reason,
    with_state,
)
from jobs.domain.events import EventType
from jobs.domain.marketplace import (
    Engagement,
    EngagementState,
    FundingSource,
    InvalidMarketTransition,
    MarketJob,
)
from jobs.service_layer.deps import Deps
from jobs.service_layer.marketplace import money_steps
from jobs.service_layer.notifications import record_event
from jobs.service_layer.ports import JobsUnitOfWork


@dataclass(frozen=True, slots=True)
class EngagementView:
    """An engagement with its dispute (if any) and its money steps."""

    engagement: Engagement
    dispute: Dispute | None = None
    steps: list[MoneyStep] = field(default_factory=list)
    # What its receivable holds for the customer (a refund refused or failed, not yet paid
    # back), and what operators recorded as paid back outside (marketplace.receivables).
    owed_to_customer_minor: int = 0
    settled_outside_minor: int = 0


@dataclass(frozen=True, slots=True)
class DisputePage:
    disputes: list[Dispute]
    next_page_token: str = ""


# --------------------------------------------------------------------------- access


def _party(actor: commands.Actor, engagement: Engagement) -> bool:
    return bool(actor.user_id) and actor.user_id in (
        engagement.customer_id,
        engagement.contractor_id,
    )


def _visible(
    actor: commands.Actor, engagement: Engagement | None, engagement_id: str
) -> Engagement:
    """The engagement for its parties and admins; absent for everyone else (SEC-2)."""
    if engagement is None or not (actor.is_admin or _party(actor, engagement)):
        raise EngagementNotFound(engagement_id)
    return engagement


def _require(allowed: bool, what: str) -> None:
    if not allowed:
        raise NotAllowed(f"only {what}")


def _require_admin(actor: commands.Actor) -> None:
    _require(actor.is_admin, "an admin may do this")


async def _lock(
    uow: JobsUnitOfWork, actor: commands.Actor, engagement_id: str
) -> tuple[MarketJob | None, Engagement]:
    """The engagement's job, then the engagement, locked in that order (the marketplace's lock
    order), visible to the caller."""
    peek = await uow.engagements.get(engagement_id) if engagement_id else None
    _visible(actor, peek, engagement_id)
    assert peek is not None
    job = await uow.market_jobs.get(peek.job_id, for_update=True)
    engagement = _visible(
        actor, await uow.engagements.get(engagement_id, for_update=True), engagement_id
    )
    return job, engagement


async def _view(engagement_id: str, deps: Deps) -> EngagementView:
    async with deps.uow as uow:
        engagement = await uow.engagements.get(engagement_id)
        if engagement is None:
            raise EngagementNotFound(engagement_id)
        steps = await uow.money_steps.for_engagement(engagement_id)
        refunds = await uow.escrow_refunds.for_engagement(engagement_id)
        return EngagementView(
            engagement,
            await uow.disputes.for_engagement(engagement_id),
            steps,
            owed_to_customer(refunds, steps),
            sum(r.amount_minor for r in refunds if r.outcome is AtProviderOutcome.SETTLED),
        )


def engagement_event_data(engagement: Engagement, **extra: object) -> dict[str, object]:
    return {
        "engagementId": engagement.id,
        "jobId": engagement.job_id,
        "customerId": engagement.customer_id,
        "contractorId": engagement.contractor_id,
        "amountMinor": engagement.amount_minor,
        "unit": engagement.unit,
        "state": engagement.state.value,
        **extra,
    }


def _payout_data(payout: Payout) -> dict[str, int]:
    return {
        "toRevenueMinor": payout.to_revenue,
        "toContractorMinor": payout.to_contractor,
        "refundedMinor": payout.refunded_minor,
    }


# --------------------------------------------------------------------------- reads


async def get_engagement(cmd: commands.EngagementCommand, deps: Deps) -> EngagementView:
    async with deps.uow as uow:
        _visible(cmd.actor, await uow.engagements.get(cmd.engagement_id), cmd.engagement_id)
    return await _view(cmd.engagement_id, deps)


async def list_disputes(cmd: commands.ListDisputes, deps: Deps) -> DisputePage:
    """ESC-11: an admin's list of disputes (open ones first to handle), oldest first."""
    _require_admin(cmd.actor)
    state = None
    if cmd.state:
        try:
            state = DisputeState(cmd.state.lower())
        except ValueError:
            raise ValidationError(
                "unknown dispute state", fields={"state": "open or resolved"}
            ) from None
    size = page_size(cmd.page_size)
    cursor = decode_token(cmd.page_token)
    after = None
    if cursor is not None:
        try:
            after = (datetime.fromisoformat(str(cursor["at"])), str(cursor["id"]))
        except (KeyError, ValueError):
            raise ValidationError(
                "page_token is invalid", fields={"page_token": "invalid"}
            ) from None
    async with deps.uow as uow:
        found = await uow.disputes.list(state, after, size + 1)
    page, more = found[:size], len(found) > size
    token = ""
    if more and page:
        token = encode_token({"at": page[-1].opened_at.isoformat(), "id": page[-1].id})
    return DisputePage(page, token)


# --------------------------------------------------------------------------- work


async def start_work(cmd: commands.EngagementCommand, deps: Deps) -> EngagementView:
    """The contractor starts: assigned -> in_progress (a repeat is answered as it is)."""
    async with deps.uow as uow:
        _job, engagement = await _lock(uow, cmd.actor, cmd.engagement_id)
        _require(cmd.actor.user_id == engagement.contractor_id, "the contractor starts the work")
        if engagement.state is not EngagementState.IN_PROGRESS:
            engagement.move(
                EngagementState.IN_PROGRESS, cmd.actor.name, "work started", deps.clock()
            )
            await uow.engagements.save(engagement)
            await uow.commit()
    return await _view(cmd.engagement_id, deps)


async def complete(cmd: commands.EngagementCommand, deps: Deps) -> EngagementView:
    """ESC-7: the customer completes an in-progress engagement: one transfer
    `engagement:<id>:complete` pays fee2 to revenue and the rest of the escrow to the contractor.
    Completing again is refused (INVALID_TRANSITION) and changes nothing."""
    async with deps.uow as uow:
        now = deps.clock()
        job, engagement = await _lock(uow, cmd.actor, cmd.engagement_id)
        _require(cmd.actor.user_id == engagement.customer_id, "the customer completes the work")
        if engagement.state is EngagementState.DISPUTED:
            raise EscrowFrozen(engagement.id)
        payout = completion_payout(engagement, deps.config.completion_fee_bps)
        engagement.move(EngagementState.COMPLETED, cmd.actor.name, "completed by the customer", now)
        await _end(uow, job, engagement, plan_step(engagement, StepKind.COMPLETE, payout, now))
        await record_event(
            uow,
            EventType.ENGAGEMENT_COMPLETED,
            engagement.id,
            now,
            engagement_event_data(engagement, **_payout_data(payout)),
        )
        await uow.commit()
    await money_steps.drive(engagement.id, StepKind.COMPLETE, deps)
    return await _view(engagement.id, deps)


async def _end(
    uow: JobsUnitOfWork, job: MarketJob | None, engagement: Engagement, step: MoneyStep
) -> None:
    """Persist an ended engagement with its money step; a completed job closes, a cancelled one
    takes offers again. A card refund is netted against what refunds made at the provider left
    owed (the customer has that much back already: it settles the debt, not refunded twice)."""
    await uow.engagements.save(engagement)
    if step.needs_refund:
        step.net(await uow.escrow_refunds.for_engagement(engagement.id), engagement.updated_at)
    await uow.money_steps.add(step)
    if job is None or job.engagement_id != engagement.id:
        return
    if engagement.state is EngagementState.COMPLETED:
        job.close(engagement.updated_at)
    else:
        job.reopen(engagement.updated_at)
    await uow.market_jobs.save(job)


def _cancel_allowed(policy: CancelPolicy, engagement: Engagement) -> None:
    if engagement.state is EngagementState.DISPUTED:
        raise EscrowFrozen(engagement.id)
    if engagement.state is EngagementState.IN_PROGRESS and not policy.cancel_after_start:
        raise InvalidMarketTransition(
            "engagement", engagement.id, engagement.state.value, EngagementState.CANCELLED.value
        )


async def _provider(engagement: Engagement, deps: Deps) -> str:
    """The provider whose clearing account a card refund goes back through."""
    if engagement.funding is not FundingSource.CARD:
        return ""
    assert deps.card_refunds is not None, "card refunds need payments (Deps.card_refunds)"
    return await deps.card_refunds.provider_of(engagement.payment_id)


async def cancel(cmd: commands.EngagementCommand, deps: Deps) -> EngagementView:
    """ESC-8: the customer (or an admin) cancels by the configured policy; the money goes back
    the way it was paid (coins to the COIN wallet, a card through a provider refund)."""
    async with deps.uow as uow:
        peek = _visible(cmd.actor, await uow.engagements.get(cmd.engagement_id), cmd.engagement_id)
    _require(
        cmd.actor.is_admin or cmd.actor.user_id == peek.customer_id,
        "the customer or an admin cancels",
    )
    if peek.state is EngagementState.OPEN:
        return await _cancel_unfunded(cmd, deps)
    provider = await _provider(peek, deps)
    async with deps.uow as uow:
        now = deps.clock()
        job, engagement = await _lock(uow, cmd.actor, cmd.engagement_id)
        _cancel_allowed(deps.config.cancel_policy, engagement)
        payout = cancel_payout(engagement, deps.config.cancel_policy)
        reason = cmd.reason or "cancelled"
        step = plan_step(engagement, StepKind.CANCEL, payout, now, provider)
        engagement.move(EngagementState.CANCELLED, cmd.actor.name, reason[:200], now)
        await _end(uow, job, engagement, step)
        await record_event(
            uow,
            EventType.ENGAGEMENT_CANCELLED,
            engagement.id,
            now,
            engagement_event_data(engagement, **_payout_data(payout)),
        )
        await uow.commit()
    await money_steps.drive(engagement.id, StepKind.CANCEL, deps)
    return await _view(engagement.id, deps)


async def _cancel_unfunded(cmd: commands.EngagementCommand, deps: Deps) -> EngagementView:
    """An engagement whose direct payment has not come: cancelled with no money to move (a
    capture arriving later is returned to the customer); its job takes offers again. A coin
    funding in flight settles in moments: not cancellable meanwhile."""
    async with deps.uow as uow:
        now = deps.clock()
        job, engagement = await _lock(uow, cmd.actor, cmd.engagement_id)
        if engagement.state is not EngagementState.OPEN:
            raise Conflict(f"engagement {engagement.id} changed meanwhile; retry")
        if engagement.funding is not FundingSource.JOB_PAYMENT:
            raise Conflict(f"engagement {engagement.id} is being funded; retry")
        engagement.move(EngagementState.CANCELLED, cmd.actor.name, "cancelled before payment", now)
        await uow.engagements.save(engagement)
        if job is not None:
            job.unlock(engagement.id, now)
            await uow.market_jobs.save(job)
        await uow.commit()
    return await _view(cmd.engagement_id, deps)


# --------------------------------------------------------------------------- disputes


async def open_dispute(cmd: commands.OpenDispute, deps: Deps) -> EngagementView:
    """Either party disputes an assigned or in-progress engagement: its escrow is frozen."""
    reason = validate_reason(cmd.reason)
    async with deps.uow as uow:
        now = deps.clock()
        _job, engagement = await _lock(uow, cmd.actor, cmd.engagement_id)
        _require(_party(cmd.actor, engagement), "a party of the engagement opens a dispute")
        if engagement.state not in DISPUTABLE:
            raise InvalidMarketTransition(
                "engagement", engagement.id, engagement.state.value, EngagementState.DISPUTED.value
            )
        dispute = Dispute(
            id=new_id("dsp"),
            engagement_id=engagement.id,
            opened_by=cmd.actor.user_id,
            reason=reason,
            state=DisputeState.OPEN,
            opened_at=now,
            engagement_state=engagement.state,
        )
        engagement.move(EngagementState.DISPUTED, cmd.actor.name, "dispute opened", now)
        await uow.engagements.save(engagement)
        await uow.disputes.add(dispute)
        await record_event(
            uow,
            EventType.DISPUTE_OPENED,
            dispute.id,
            now,
            engagement_event_data(engagement, disputeId=dispute.id, openedBy=dispute.opened_by),
        )
        await uow.commit()
    return await _view(engagement.id, deps)


def _resolution(cmd: commands.ResolveDispute) -> Resolution:
    try:
        return Resolution((cmd.resolution or "").lower())
    except ValueError:
        raise ValidationError(
            "unknown resolution", fields={"resolution": "release, refund or split"}
        ) from None


async def resolve_dispute(cmd: commands.ResolveDispute, deps: Deps) -> EngagementView:
    """An admin resolves a dispute exactly once: release (the completion split), refund (escrow
    back, the acceptance fee kept) or split (contractor_minor to the contractor, the rest back)."""
    _require_admin(cmd.actor)
    resolution = _resolution(cmd)
    async with deps.uow as uow:
        found = await uow.disputes.get(cmd.dispute_id) if cmd.dispute_id else None
        if found is None:
            raise DisputeNotFound(cmd.dispute_id)
        engagement_id = found.engagement_id
        peek = await uow.engagements.get(engagement_id)
    assert peek is not None
    provider = await _provider(peek, deps) if resolution is not Resolution.RELEASE else ""
    async with deps.uow as uow:
        now = deps.clock()
        job, engagement = await _lock(uow, cmd.actor, engagement_id)
        dispute = await uow.disputes.get(cmd.dispute_id, for_update=True)
        assert dispute is not None
        at_opening = with_state(engagement, dispute.engagement_state)
        payout = resolution_payout(
            at_opening, resolution, cmd.contractor_minor, deps.config.completion_fee_bps
        )
        dispute.resolve(resolution, payout.to_contractor, cmd.actor.user_id, cmd.note[:2000], now)
        target = (
            EngagementState.COMPLETED
            if resolution is Resolution.RELEASE
            else EngagementState.CANCELLED
        )
        step = plan_step(engagement, StepKind.RESOLVE, payout, now, provider)
        engagement.move(target, cmd.actor.name, f"dispute {dispute.id}: {resolution.value}", now)
        await _end(uow, job, engagement, step)
        await uow.disputes.save(dispute)
        await record_event(
            uow,
            EventType.DISPUTE_RESOLVED,
            dispute.id,
            now,
            engagement_event_data(
                engagement,
                disputeId=dispute.id,
                resolution=resolution.value,
                **_payout_data(payout),
            ),
        )
        await uow.commit()
    await money_steps.drive(engagement_id, StepKind.RESOLVE, deps)
    return await _view(engagement_id, deps)
