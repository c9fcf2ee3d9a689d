"""Refunds of offer money that succeeded and then failed at the provider (Stripe: the card was
closed or expired since; ESC-1 every cent, ESC-8): payments reverses its record (FAILED, the
payment refundable again) and publishes `payment.refund_failed` on the marketplace's settlement
stream in the same transaction; jobs, which booked the refund (one made at the provider, through
escrow_refunds, or an engagement's own cancellation or resolution refund, its money step), books
its reversal here.

The event is never trusted: the payment's refunds are read again from payments, and each that
jobs booked and payments now reports FAILED is reversed once (domain.escrow.failed_bookings), by
an `escrow_refunds` row inserted first on `<refund id>:failed` under the job's and the
engagement's locks (the marketplace's lock order: a completion, a cancellation, a resolution or a
refund at the provider racing it takes turns with it), posted under the same name as payments'
reversals, `payment:<pid>:refund:<refund id>:failed`: provider clearing -> the engagement's
receivable (domain.escrow.refund_reversal). The money is back with the provider and the customer
does not have it:

- a refund that had left money owed (frozen: in part while held; owed: after the release) was
  booked from the receivable: its reversal settles that debt; the escrow, still holding the
  money (frozen), stays frozen by its dispute for the admin to decide, now on the whole amount;
- a refund that had come out of the escrow and the fee (unwound, or the engagement's own) leaves
  the receivable above zero: owed to the customer. The engagement ended by then (cancelled,
  resolved, the job taking offers again), so it is not put back into an escrow: operators pay
  the customer back (a new refund at the provider is booked as owed and settles it).

Each is an `engagement.refund_failed` event to the parties, a count of
`hirepay_escrow_refunds_failed_after_success_total{refund}` (alert
HirepayEscrowRefundFailedAfterSuccess), a warning, and while the receivable holds money for the
customer the auditor's `escrow_refund_payable`. Nothing is refunded again by itself (the card
that refused it would refuse again). The reversal is posted after the commit; a wallet outage
leaves it pending and the event is applied again (the stream's cursor does not pass it).
"""

from __future__ import annotations

import logging
from datetime import datetime

from jobs.domain.escrow import (
    FAILED_SUFFIX,
    REFUND_STATUS_FAILED,
    EscrowRefund,
    MoneyStep,
    PaymentRefund,
    StepKind,
    StepState,
    failed_bookings,
    refund_reversal,
    still_owed,
)
from jobs.domain.events import EventType
from jobs.domain.marketplace import Engagement
from jobs.domain.posting_saga import SettlementEvent
from jobs.service_layer import metrics
from jobs.service_layer.deps import Deps
from jobs.service_layer.marketplace import money_steps
from jobs.service_layer.marketplace.escrow import engagement_event_data
from jobs.service_layer.marketplace.refunds_at_provider import (
    is_offer_event,
    post,
    refunds_of_offer,
)
from jobs.service_layer.notifications import record_event
from jobs.service_layer.ports import JobsUnitOfWork

log = logging.getLogger(__name__)

REFUND_FAILED = "payment.refund_failed"


def is_offer_refund_failure(event: SettlementEvent) -> bool:
    """Whether the event is a refund of an offer's card payment failed after it succeeded."""
    return is_offer_event(event, REFUND_FAILED)


# One reversal decided: its row, which refund it reverses (at_provider, own) and what the
# receivable then holds for the customer.
Decided = tuple[EscrowRefund, str, int]


async def apply_refund_failed_event(event: SettlementEvent, deps: Deps) -> bool:
    """Reverse the bookings of the event's offer payment's refunds that failed after success;
    whether any was new."""
    if not is_offer_refund_failure(event):
        return False
    found = await refunds_of_offer(event, deps)
    if found is None:
        return False
    engagement, provider, refunds = found
    if not any(r.status == REFUND_STATUS_FAILED for r in refunds):
        return False
    async with deps.uow as uow:
        now = deps.clock()
        await uow.market_jobs.get(engagement.job_id, for_update=True)
        locked = await uow.engagements.get(engagement.id, for_update=True)
        assert locked is not None
        booked = await uow.escrow_refunds.for_engagement(engagement.id)
        steps = await uow.money_steps.for_engagement(engagement.id)
        decided, late = await _reverse(uow, locked, refunds, provider, booked, steps, now)
        if decided:
            await uow.commit()
    for kind in late:
        await money_steps.drive(engagement.id, kind, deps)
    for reversal, which, payable in decided:
        metrics.count(metrics.ESCROW_REFUNDS_FAILED_AFTER_SUCCESS, which)
        log.warning(
            "engagement %s: refund %s (%d %s, %s) failed at the provider after it succeeded:"
            " reversed to its receivable, %d %s owed to the customer",
            reversal.engagement_id,
            reversal.refund_id.removesuffix(FAILED_SUFFIX),
            reversal.amount_minor,
            reversal.unit,
            which,
            payable,
            reversal.unit,
        )
    # Those recorded before and not posted yet too (a wallet outage, a crash in between), the
    # refunds they reverse as well: both transfers stand on the ledger.
    for booking in booked:
        if booking.state is StepState.PENDING:
            await post(booking, deps)
    return bool(decided)


async def _reverse(
    uow: JobsUnitOfWork,
    engagement: Engagement,
    refunds: list[PaymentRefund],
    provider: str,
    booked: list[EscrowRefund],
    steps: list[MoneyStep],
    now: datetime,
) -> tuple[list[Decided], list[StepKind]]:
    """Record the reversal of each failed refund not reversed yet (the caller holds the job's
    and the engagement's locks; `booked` grows with them): those decided, and the steps whose
    refund is reversed and that are still to post it (to drive once committed)."""
    decided: list[Decided] = []
    late: list[StepKind] = []
    for refund, step in failed_bookings(refunds, booked, steps):
        if step is not None and not step.refund_id:
            # The step's refund was made but its id not recorded yet (its driver died, or is on
            # its way): recorded now, so that the step books the refund reversed here.
            current = await uow.money_steps.get(step.engagement_id, step.kind, for_update=True)
            if current is not None and not current.refund_id:
                current.refunded(refund.refund_id, now)
                await uow.money_steps.save(current)
        if step is not None and step.state is StepState.PENDING:
            late.append(step.kind)
        reversal = refund_reversal(engagement, refund, provider, now)
        if not await uow.escrow_refunds.add(reversal):
            continue
        booked.append(reversal)
        payable = max(-still_owed(booked, steps), 0)
        await record_event(
            uow,
            EventType.ENGAGEMENT_REFUND_FAILED,
            reversal.refund_id,
            now,
            engagement_event_data(
                engagement,
                refundId=refund.refund_id,
                refundedMinor=refund.amount_minor,
                owedToCustomerMinor=payable,
            ),
        )
        decided.append((reversal, "own" if step is not None else "at_provider", payable))
    return decided, late
