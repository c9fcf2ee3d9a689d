"""Refunds that succeeded and then failed at the provider (ESC-1 every cent, API-4, PAY-15, OPS-1).

Stripe reports a refund `succeeded` as soon as it is sent, and may report it `failed` later (the
card was closed or expired since: `refund.failed` / `refund.updated`, with a `failure_reason`):
the money never reached the customer and is back on the platform's Stripe balance. Whoever made
the refund (Hirepay's own, or one made at the provider and booked by webhook), its reversal is
the same, in the transaction that applies the event, under the payment's row lock
(provider_refunds.apply_refund_event):

- the refund's record goes FAILED (`failed_after_success: <reason>`), once: a twin event finds
  it FAILED and changes nothing;
- the payment's refunded amount is given back and its state follows the succeeded refunds left
  (REFUNDED -> PARTIALLY_REFUNDED or CAPTURED);
- the refund's booking is reversed by a balanced booking of its own, never deleted:
  `payment:<id>:refund:<refund id>:failed` (insert-first on its id), which also gives back the
  coins the refund had taken (a coin purchase, a direct job payment). Coins recorded short were
  never taken: nothing to give back, and no shortfall left; a coin hold still owed is released
  by the refund's own coin step, as for any failed refund;
- an audit entry (PAY-15), a warning and `hirepay_payment_refunds_failed_after_success_total`
  (alert HirepayRefundFailedAfterSuccess).

No settlement event for a posting's money, and nothing is re-done by itself: a posting that a
full refund ended stays ended in jobs (its fee is the platform's again); operators, alerted,
reach the customer: refund again by other means, or re-post (README "Refunds made at the
provider"). Marketplace offer money is booked by jobs, not here (no booking to reverse): the
caller publishes `payment.refund_failed` on the marketplace stream in this transaction, and jobs
books the reversal (README "Refunds of offer money made at the provider").
"""

from __future__ import annotations

import logging
from datetime import datetime

from payments.domain.credits import CreditGrant
from payments.domain.events import AuditEntry
from payments.domain.model import Payment
from payments.domain.provider import ProviderEvent, ProviderRefund
from payments.domain.refunds import Refund, RefundStatus
from payments.service_layer import metrics
from payments.service_layer.ports import PaymentsUnitOfWork

log = logging.getLogger(__name__)


async def reverse_failed_refund(
    uow: PaymentsUnitOfWork,
    p: Payment,
    ours: Refund,
    remote: ProviderRefund,
    event: ProviderEvent | None,
    now: datetime,
) -> Refund | None:
    """Reverse a succeeded refund the provider now reports failed (the caller holds the
    payment's row lock and saves `p`; `event` None: found by the reconciliation, for a provider
    whose refunds arrive by no event); the refund as recorded now, or None when it was not
    SUCCEEDED (reversed already by a twin event, or never succeeded)."""
    stored = await uow.refunds.get(ours.id, for_update=True)
    if stored is None or stored.status is not RefundStatus.SUCCEEDED:
        return None
    coins = stored.fail_after_success(remote.failure_reason, now)
    await uow.refunds.save(stored)
    settled = await uow.refunds.succeeded_total(p.id)
    before = p.state
    p.reverse_refund(stored.amount_minor, settled, now)
    grant = CreditGrant.refund_failed(p, stored, coins, now)
    if grant is not None:
        await uow.credit_grants.add(grant)
    await uow.audit.add(
        AuditEntry(
            action="refund",
            actor="provider",
            reason=(
                f"refund {stored.id} ({remote.id}) succeeded and failed at {p.provider} since"
                f" ({remote.failure_reason or 'no reason given'}): reversed"
            ),
            details={
                "refund_id": stored.id,
                "provider_refund_id": remote.id,
                "amount_minor": str(stored.amount_minor),
                "coins_given_back": str(coins),
                "coins_state": stored.coins_state.value,
                "from": before.value,
                "to": p.state.value,
                "transfer_id": grant.transfer_id if grant is not None else "",
                "event_id": event.id if event is not None else "",
            },
            payment_id=p.id,
        )
    )
    subsystem = p.subsystem or "none"
    uow.after_commit(
        lambda: metrics.REFUNDS_FAILED_AFTER_SUCCESS.labels(p.provider, subsystem).inc()
    )
    log.warning(
        "refund %s (%s) of payment %s succeeded and failed at %s since (%s): reversed,"
        " the payment %s -> %s; the customer has not been refunded",
        stored.id,
        remote.id,
        p.id,
        p.provider,
        remote.failure_reason or "no reason given",
        before.value,
        p.state.value,
    )
    return stored
