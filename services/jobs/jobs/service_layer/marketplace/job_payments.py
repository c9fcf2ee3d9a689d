"""Paying a job without an offer (seed 001): from coins at once (ESC-4) or through a provider
checkout that issues the coins straight into escrow (ESC-5).

Both create the engagement `open` with its funding pending and hold the job for it (the job's
acceptance lock, as an accepted offer does), so nothing else takes the job meanwhile:
- coins: one transfer `engagement:<id>:fund` (customer COIN -> revenue fee1, -> escrow the rest),
  a money step driven like the others; refused for want of coins, the engagement is cancelled and
  the job open again (402 INSUFFICIENT_FUNDS);
- direct: payments opens the checkout; on its `payment.captured` settlement event (metadata
  type=job_payment) the engagement is assigned with its escrow id and amounts read from the
  ledger transfer `payment:<pid>:capture` that payments booked. A duplicate event changes nothing;
  money captured for an engagement cancelled meanwhile goes back to the customer's COIN wallet.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace

from hirepay_platform import money
from hirepay_platform.errors import ErrorKind, HirepayError, ValidationError
from hirepay_platform.ids import new_id
from hirepay_platform.reasons import FailureReason
from jobs.domain import commands
from jobs.domain.errors import NotAllowed
from jobs.domain.escrow import (
    AccountRef,
    JobPaymentCheckout,
    JobPaymentSession,
    MoneyStep,
    StepKind,
    StepState,
    cancel_payout,
    funding_step,
    plan_step,
)
from jobs.domain.marketplace import (
    COIN_UNIT,
    Engagement,
    EngagementState,
    EngagementTransition,
    FundingSource,
    FundingState,
    MarketJob,
    MarketJobNotFound,
    capture_transfer_id,
    funding_split,
)
from jobs.domain.posting_saga import SettlementEvent
from jobs.service_layer.deps import Deps
from jobs.service_layer.marketplace import money_steps
from jobs.service_layer.marketplace.escrow import EngagementView, _view

log = logging.getLogger(__name__)

JOB_PAYMENT = "job_payment"
CAPTURED = "payment.captured"


class InsufficientCoins(HirepayError):
    """ESC-4: the customer's coins do not cover the payment (402 at the gateway)."""

    kind = ErrorKind.FAILED_PRECONDITION
    reason = FailureReason.INSUFFICIENT_FUNDS

    def __init__(self, engagement_id: str) -> None:
        super().__init__(
            "not enough coins to pay this job", metadata={"engagement_id": engagement_id}
        )


def _engagement_id(customer_id: str, request_id: str) -> str:
    """One engagement per (customer, idempotency key): a retried request pays once."""
    if not request_id:
        return new_id("eng")
    digest = hashlib.sha256(f"{customer_id}\x00{request_id}".encode()).hexdigest()[:32]
    return f"eng_{digest}"


def _validate(actor: commands.Actor, job_id: str, freelancer_id: str, amount_minor: int) -> int:
    if not actor.is_customer:
        raise NotAllowed("only a customer pays a job", metadata={"role": actor.role})
    problems = {}
    if not job_id:
        problems["jobId"] = "is required"
    if not freelancer_id or len(freelancer_id) > 128:
        problems["freelancerId"] = "is required (at most 128 characters)"
    elif freelancer_id == actor.user_id:
        problems["freelancerId"] = "must be someone else"
    if problems:
        raise ValidationError("the job payment is invalid", fields=problems)
    return money.validate_amount(amount_minor, field="amount")


async def _hold_job(
    actor: commands.Actor, job_id: str, engagement_id: str, deps: Deps
) -> MarketJob:
    """The caller's job, locked, held for `engagement_id` (its acceptance lock); a repeat for the
    same engagement finds it held already."""
    async with deps.uow as uow:
        job = await uow.market_jobs.get(job_id, for_update=True)
        if job is None or job.customer_id != actor.user_id:
            raise MarketJobNotFound(job_id)
        if job.accepting_offer_id != engagement_id and job.engagement_id != engagement_id:
            job.ensure_open()
            job.lock_for(engagement_id, deps.clock())
            await uow.market_jobs.save(job)
            await uow.commit()
    return job


async def _open(
    actor: commands.Actor,
    job_id: str,
    engagement: Engagement,
    deps: Deps,
    step: MoneyStep | None = None,
) -> Engagement:
    """The engagement `open` with the job held for it (or the one a repeat created before)."""
    async with deps.uow as uow:
        job = await uow.market_jobs.get(job_id, for_update=True)
        if job is None or job.customer_id != actor.user_id:
            raise MarketJobNotFound(job_id)
        existing = await uow.engagements.get(engagement.id)
        if existing is not None:
            return existing
        if job.accepting_offer_id != engagement.id:
            job.ensure_open()
            job.lock_for(engagement.id, deps.clock())
        engagement.pending.append(
            EngagementTransition(
                engagement.id, None, EngagementState.OPEN, actor.name, "job payment", deps.clock()
            )
        )
        await uow.engagements.add(engagement)
        await uow.market_jobs.save(job)
        if step is not None:
            await uow.money_steps.add(step)
        await uow.commit()
    return engagement


def _new_engagement(
    engagement_id: str,
    actor: commands.Actor,
    job_id: str,
    freelancer_id: str,
    funding: FundingSource,
    amount_minor: int,
    deps: Deps,
    split: tuple[int, int] | None = None,
) -> Engagement:
    """A new open engagement in COIN: fee1 and escrow by the acceptance fee, or as given
    (payments' terms of a direct job payment)."""
    if split is None:
        parts = funding_split(amount_minor, deps.config.acceptance_fee_bps)
        split = (parts.fee_minor, parts.escrow_minor)
    now = deps.clock()
    return Engagement(
        id=engagement_id,
        job_id=job_id,
        customer_id=actor.user_id,
        contractor_id=freelancer_id,
        unit=COIN_UNIT,
        amount_minor=amount_minor,
        fee1_minor=split[0],
        escrow_minor=split[1],
        funding=funding,
        state=EngagementState.OPEN,
        created_at=now,
        updated_at=now,
    )


# --------------------------------------------------------------------------- ESC-4 coins


async def pay_with_coins(cmd: commands.PayJobWithCoins, deps: Deps) -> EngagementView:
    """ESC-4: escrow at once from the customer's coins; the job assigned to the freelancer."""
    amount = _validate(cmd.actor, cmd.job_id, cmd.freelancer_id, cmd.amount_minor)
    engagement = _new_engagement(
        _engagement_id(cmd.actor.user_id, cmd.request_id),
        cmd.actor,
        cmd.job_id,
        cmd.freelancer_id,
        FundingSource.COINS,
        amount,
        deps,
    )
    engagement = await _open(
        cmd.actor, cmd.job_id, engagement, deps, funding_step(engagement, deps.clock())
    )
    step = await money_steps.drive(engagement.id, StepKind.FUND, deps)
    if step is not None and step.state is StepState.REFUSED:
        raise InsufficientCoins(engagement.id)
    return await _view(engagement.id, deps)


async def _funded(step: MoneyStep, deps: Deps) -> None:
    """After a coin funding: assign the engagement (done) or cancel it and free the job (refused)."""
    escrow = ""
    if step.state is StepState.DONE:
        assert deps.escrow is not None
        async with deps.uow as uow:
            peek = await uow.engagements.get(step.engagement_id)
        if peek is None:
            return
        escrow = await deps.escrow.account_id(AccountRef.escrow(peek.id, peek.unit))
    await _settle_funding(step.engagement_id, escrow, deps, refused=step.state is StepState.REFUSED)


async def _settle_funding(
    engagement_id: str,
    escrow_account_id: str,
    deps: Deps,
    *,
    refused: bool = False,
    amounts: tuple[int, int] | None = None,
) -> bool:
    """Mark an open engagement funded and assigned (or cancelled); False if it was not open."""
    async with deps.uow as uow:
        now = deps.clock()
        peek = await uow.engagements.get(engagement_id)
        if peek is None:
            return False
        job = await uow.market_jobs.get(peek.job_id, for_update=True)
        engagement = await uow.engagements.get(engagement_id, for_update=True)
        if engagement is None or engagement.state is not EngagementState.OPEN or job is None:
            return False
        if refused:
            engagement.move(EngagementState.CANCELLED, "wallet", "not enough coins", now)
            job.unlock(engagement.id, now)
        else:
            if amounts is not None:
                fee, escrow = amounts
                engagement.fee1_minor, engagement.escrow_minor = fee, escrow
                engagement.amount_minor = fee + escrow
            engagement.funding_state = FundingState.FUNDED
            engagement.escrow_account_id = escrow_account_id
            engagement.move(EngagementState.ASSIGNED, "wallet", "funded", now)
            job.assign(engagement.id, engagement.contractor_id, engagement.id, now)
        await uow.engagements.save(engagement)
        await uow.market_jobs.save(job)
        await uow.commit()
    return True


money_steps.on_settled(StepKind.FUND, _funded)


# --------------------------------------------------------------------------- ESC-5 direct


async def start_job_payment(
    cmd: commands.StartJobPayment, deps: Deps
) -> tuple[EngagementView, JobPaymentSession]:
    """ESC-5: the job held for a new engagement, payments' checkout (which fixes the coins at its
    rate, the fee and the escrow), then the engagement open with those terms, funding pending.
    A repeat (same request id) answers the same engagement and checkout."""
    amount = _validate(cmd.actor, cmd.job_id, cmd.freelancer_id, cmd.amount_minor)
    currency = money.validate_unit(cmd.currency, field="currency", cash_only=True)
    assert deps.job_payments is not None, "direct job payments need payments (Deps.job_payments)"
    engagement_id = _engagement_id(cmd.actor.user_id, cmd.request_id)
    await _hold_job(cmd.actor, cmd.job_id, engagement_id, deps)
    request = JobPaymentCheckout(
        engagement_id=engagement_id,
        job_id=cmd.job_id,
        customer_id=cmd.actor.user_id,
        freelancer_id=cmd.freelancer_id,
        amount_minor=amount,
        currency=currency,
        return_url=cmd.return_url,
        cancel_url=cmd.cancel_url,
        email=cmd.email,
        provider=cmd.provider,
    )
    try:
        session = await deps.job_payments.create_checkout(request)
    except HirepayError as exc:
        if exc.kind in (ErrorKind.INVALID_ARGUMENT, ErrorKind.FAILED_PRECONDITION):
            await _release_hold(cmd.job_id, engagement_id, deps)
        raise
    engagement = _new_engagement(
        engagement_id,
        cmd.actor,
        cmd.job_id,
        cmd.freelancer_id,
        FundingSource.JOB_PAYMENT,
        session.coins,
        deps,
        split=(session.fee_coins, session.escrow_coins),
    )
    engagement.payment_id = session.payment_id
    await _open(cmd.actor, cmd.job_id, engagement, deps)
    return await _view(engagement_id, deps), session


async def _release_hold(job_id: str, engagement_id: str, deps: Deps) -> None:
    """Free a job held for an engagement whose checkout payments refused."""
    async with deps.uow as uow:
        job = await uow.market_jobs.get(job_id, for_update=True)
        if job is not None and await uow.engagements.get(engagement_id) is None:
            job.unlock(engagement_id, deps.clock())
            await uow.market_jobs.save(job)
            await uow.commit()


async def apply_job_payment_event(event: SettlementEvent, deps: Deps) -> bool:
    """The `payment.captured` of a direct job payment: the engagement assigned with its escrow
    (idempotent: a duplicate or late event finds it funded and changes nothing)."""
    meta = event.metadata
    if event.type != CAPTURED or meta.get("type") != JOB_PAYMENT:
        return False
    engagement_id = meta.get("engagement_id", "")
    payment_id = event.result.payment_id
    async with deps.uow as uow:
        engagement = await uow.engagements.get(engagement_id) if engagement_id else None
    if engagement is None or engagement.funding_state is FundingState.FUNDED:
        return False
    assert deps.escrow is not None
    escrow_ref = AccountRef.escrow(engagement.id, COIN_UNIT)
    escrow_id = meta.get("escrow_account_id") or await deps.escrow.account_id(escrow_ref)
    revenue_id = await deps.escrow.account_id(AccountRef.revenue(COIN_UNIT))
    credits = await deps.escrow.credits_of(capture_transfer_id(payment_id))
    amounts = (credits.get(revenue_id, 0), credits.get(escrow_id, 0))
    if engagement.state is EngagementState.OPEN:
        if payment_id and not engagement.payment_id:
            async with deps.uow as uow:
                current = await uow.engagements.get(engagement.id, for_update=True)
                if current is not None:
                    current.payment_id = payment_id
                    await uow.engagements.save(current)
                    await uow.commit()
        return await _settle_funding(engagement.id, escrow_id, deps, amounts=amounts)
    if engagement.state is EngagementState.CANCELLED:
        await _refund_late_capture(engagement, escrow_id, amounts, deps)
        return True
    return False


async def _refund_late_capture(
    engagement: Engagement, escrow_id: str, amounts: tuple[int, int], deps: Deps
) -> None:
    """Money captured for an engagement cancelled before it came: everything back to the
    customer's COIN wallet (the engagement never started), under `engagement:<id>:cancel`."""
    fee, escrow = amounts
    funded = replace(
        engagement,
        fee1_minor=fee,
        escrow_minor=escrow,
        amount_minor=fee + escrow,
        state=EngagementState.ASSIGNED,
        escrow_account_id=escrow_id,
        pending=[],
    )
    payout = cancel_payout(funded, deps.config.cancel_policy)
    async with deps.uow as uow:
        now = deps.clock()
        current = await uow.engagements.get(engagement.id, for_update=True)
        if current is None:
            return
        current.fee1_minor, current.escrow_minor = fee, escrow
        current.amount_minor = fee + escrow
        current.escrow_account_id = escrow_id
        current.funding_state = FundingState.FUNDED
        await uow.engagements.save(current)
        await uow.money_steps.add(plan_step(funded, StepKind.CANCEL, payout, now))
        await uow.commit()
    await money_steps.drive(engagement.id, StepKind.CANCEL, deps)
