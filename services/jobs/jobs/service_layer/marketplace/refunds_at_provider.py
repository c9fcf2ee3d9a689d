"""Offer money refunded at the provider, outside the escrow (a refund from the provider's
dashboard, or the provider refunding on its own; ESC-1, ESC-8): payments records the refund and
publishes `payment.refunded` on the marketplace's settlement stream; jobs books it on the ledger
under payments' id for it, `payment:<pid>:refund:<refund_id>`, from wherever the money now is,
and tells the parties.

The event is never trusted: the payment's refunds are read again from payments, and each
succeeded one that no money step of jobs asked for is decided once, under the engagement's lock
(job, then engagement: the marketplace's lock order, so a completion, a cancellation or a dispute
racing it takes turns with it), insert-first on the refund id (twins and redeliveries find it
recorded). What is decided (domain.escrow.refund_at_provider):

- in full while the escrow holds the money: the escrow and the acceptance fee go to provider
  clearing (the provider paid the customer back: never to the customer's wallet), the engagement
  is `cancelled` by the system, an open dispute resolved (`refund`), the job takes offers again;
- in part while the escrow holds it: owed (receivable -> clearing) and the escrow frozen by a
  dispute the system opens, for an admin to decide (ESC-8);
- after the escrow was released (completed, cancelled, resolved): owed; an engagement's own
  refund still pending then (a cancellation or resolution that committed just before) is driven
  again at once, and nets it (money_steps: the customer is not refunded twice).

Each is an `engagement.refunded_at_provider` event to the parties (the notifier's callbacks), a
count of `hirepay_escrow_refunds_at_provider_total{outcome}` and, while owed, the auditor's
`escrow_refund_owed` (a known state, not a missing booking). The booking is posted after the
commit; a wallet outage leaves it pending and the event is applied again (the stream's cursor
does not pass it), as is the recovery of a process that died in between.
"""

from __future__ import annotations

import logging
from datetime import datetime

from hirepay_platform.errors import HirepayError, Unavailable
from hirepay_platform.ids import new_id
from jobs.domain.escrow import (
    FAILED_SUFFIX,
    HELD,
    REFUNDED_AT_PROVIDER,
    SYSTEM_ACTOR,
    AtProviderOutcome,
    Dispute,
    DisputeState,
    EscrowRefund,
    PaymentRefund,
    Resolution,
    StepState,
    refund_at_provider,
)
from jobs.domain.events import EventType
from jobs.domain.marketplace import (
    Engagement,
    EngagementState,
    FundingSource,
    MarketJob,
    engagement_id_for,
)
from jobs.domain.posting_saga import SettlementEvent
from jobs.service_layer import metrics
from jobs.service_layer.deps import Deps
from jobs.service_layer.marketplace import money_steps
from jobs.service_layer.marketplace.escrow import engagement_event_data
from jobs.service_layer.notifications import record_event
from jobs.service_layer.ports import JobsUnitOfWork

log = logging.getLogger(__name__)

REFUNDED = "payment.refunded"
# The metadata `type` of an offer's card payment (adapters.offer_funds.CardOfferFunds).
OFFER_PAYMENT = "marketplace_offer"


def is_offer_event(event: SettlementEvent, event_type: str) -> bool:
    """Whether the event is of this type and about an offer's card payment."""
    return (
        event.type == event_type
        and event.metadata.get("type") == OFFER_PAYMENT
        and bool(event.metadata.get("offer_id"))
        and bool(event.result.payment_id)
    )


def is_offer_refund(event: SettlementEvent) -> bool:
    """Whether the event is a refund of an offer's card payment (the others ask nothing here)."""
    return is_offer_event(event, REFUNDED)


class EngagementNotBookedYet(Unavailable):
    """The refunded offer's acceptance has not booked its engagement yet: applied again later
    (the stream's cursor does not pass the event)."""


async def _engagement_of(event: SettlementEvent, deps: Deps) -> Engagement | None:
    """The card engagement the refunded offer payment funds (None: nothing held to unwind)."""
    offer_id = event.metadata["offer_id"]
    async with deps.uow as uow:
        engagement = await uow.engagements.get(engagement_id_for(offer_id))
        offer = None if engagement is not None else await uow.offers.get(offer_id)
    if engagement is None:
        if offer is not None and not offer.final:
            raise EngagementNotBookedYet(f"offer {offer_id} is being accepted; retry")
        log.warning(
            "payment %s of offer %s refunded at the provider but the offer has no engagement:"
            " nothing held to unwind",
            event.result.payment_id,
            offer_id,
        )
        return None
    if engagement.funding is not FundingSource.CARD:
        return None
    return engagement if engagement.payment_id == event.result.payment_id else None


async def refunds_of_offer(
    event: SettlementEvent, deps: Deps
) -> tuple[Engagement, str, list[PaymentRefund]] | None:
    """The card engagement the event's offer payment funds, with the payment's provider and its
    refunds as payments lists them now (the event is never trusted); None: no such engagement."""
    engagement = await _engagement_of(event, deps)
    if engagement is None:
        return None
    assert deps.card_refunds is not None, "refund events need payments (Deps.card_refunds)"
    provider, refunds = await deps.card_refunds.refunds_of(engagement.payment_id)
    return engagement, provider, refunds


async def apply_refund_event(event: SettlementEvent, deps: Deps) -> bool:
    """Book the refunds made at the provider of the event's offer payment; whether any was new."""
    if not is_offer_refund(event):
        return False
    found = await refunds_of_offer(event, deps)
    if found is None:
        return False
    engagement, provider, refunds = found
    outside = [r for r in refunds if r.outside_escrow]
    if not outside:
        return False
    decided: list[EscrowRefund] = []
    async with deps.uow as uow:
        now = deps.clock()
        job = await uow.market_jobs.get(engagement.job_id, for_update=True)
        locked = await uow.engagements.get(engagement.id, for_update=True)
        assert locked is not None
        earlier = await uow.escrow_refunds.for_engagement(engagement.id)
        known = {r.refund_id for r in earlier}
        for refund in (r for r in outside if r.refund_id not in known):
            booking = refund_at_provider(locked, refund, provider, earlier, now)
            if await uow.escrow_refunds.add(booking):
                await _apply(uow, job, locked, booking, now)
                earlier.append(booking)
                decided.append(booking)
        if decided:
            await uow.commit()
    for booking in decided:
        metrics.count(metrics.ESCROW_REFUNDS_AT_PROVIDER, booking.outcome.value)
        log.warning(
            "engagement %s: %d %s refunded at the provider (%s): %s",
            booking.engagement_id,
            booking.amount_minor,
            booking.unit,
            booking.refund_id,
            booking.outcome.value,
        )
    # Those recorded before and not posted yet too (a wallet outage, a crash in between).
    for booking in (r for r in earlier if r.state is StepState.PENDING):
        await post(booking, deps)
    if any(r.outcome is AtProviderOutcome.OWED for r in earlier):
        # The engagement ended before the refund: its own refund, if still pending, may be
        # refused for want of money left to refund until it nets this one (money_steps).
        await money_steps.drive_card_refunds(engagement.id, deps)
    return bool(decided)


async def _apply(
    uow: JobsUnitOfWork,
    job: MarketJob | None,
    engagement: Engagement,
    booking: EscrowRefund,
    now: datetime,
) -> None:
    """What the refund does to the engagement (locked), in the transaction that records it."""
    reason = f"{REFUNDED_AT_PROVIDER} ({booking.refund_id})"
    dispute = await uow.disputes.for_engagement(engagement.id)
    if booking.outcome is AtProviderOutcome.UNWOUND:
        if dispute is not None and dispute.state is DisputeState.OPEN:
            dispute.resolve(Resolution.REFUND, 0, SYSTEM_ACTOR, reason, now)
            await uow.disputes.save(dispute)
        engagement.move(EngagementState.CANCELLED, SYSTEM_ACTOR, reason, now)
        await uow.engagements.save(engagement)
        if job is not None and job.engagement_id == engagement.id:
            job.reopen(now)
            await uow.market_jobs.save(job)
    elif booking.outcome is AtProviderOutcome.FROZEN and engagement.state is not (
        EngagementState.DISPUTED
    ):
        # One dispute per engagement: a refund while one is open leaves it to its admin.
        assert engagement.state in HELD
        await uow.disputes.add(
            Dispute(
                id=new_id("dsp"),
                engagement_id=engagement.id,
                opened_by=SYSTEM_ACTOR,
                reason=f"{booking.amount_minor} {booking.unit} of {engagement.amount_minor}"
                f" {reason}: decide what the contractor is owed",
                state=DisputeState.OPEN,
                opened_at=now,
                engagement_state=engagement.state,
            )
        )
        engagement.move(EngagementState.DISPUTED, SYSTEM_ACTOR, reason, now)
        await uow.engagements.save(engagement)
    await record_event(
        uow,
        EventType.ENGAGEMENT_REFUNDED_AT_PROVIDER,
        booking.refund_id,
        now,
        engagement_event_data(
            engagement,
            refundId=booking.refund_id,
            refundedMinor=booking.amount_minor,
            outcome=booking.outcome.value,
            owedMinor=max(booking.owed_minor, 0),
        ),
    )


async def post(booking: EscrowRefund, deps: Deps) -> None:
    """Post a recorded refund's booking, or its reversal's (idempotent on its transfer id), and
    mark it done; a failure is recorded and raised, so that the event is applied again."""
    assert deps.escrow is not None, "refund bookings need the wallet (Deps.escrow)"
    what = (
        f"refund {booking.refund_id.removesuffix(FAILED_SUFFIX)} failed after it succeeded"
        if booking.outcome is AtProviderOutcome.REVERSED
        else f"owed to the customer, paid back outside ({booking.reference})"
        if booking.outcome is AtProviderOutcome.SETTLED
        else REFUNDED_AT_PROVIDER
    )
    metadata = {
        "description": f"Engagement {booking.engagement_id}: {what}",
        "engagement_id": booking.engagement_id,
        "payment_id": booking.payment_id,
        "refund_id": booking.refund_id,
        "outcome": booking.outcome.value,
    }
    error: HirepayError | None = None
    try:
        await deps.escrow.post(booking.transfer_id, booking.legs, metadata)
    except HirepayError as exc:
        error = exc
    async with deps.uow as uow:
        now = deps.clock()
        if error is None:
            booking.done(now)
        else:
            booking.failed(f"{error.reason}: {error}", now)
        await uow.escrow_refunds.save(booking)
        await uow.commit()
    if error is not None:
        raise error
