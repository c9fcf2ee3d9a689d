"""Card disputes (chargebacks) by provider webhook (Stripe `charge.dispute.*`, PayPal
`CUSTOMER.DISPUTE.*`, Razorpay `payment.dispute.*`), one flow for every provider: the dispute
re-fetched through the port (`DisputeSource.retrieve_dispute`, never the event's copy; each
adapter reads its provider's dispute) is recorded against its payment, and every money movement
it carries (money withdrawn or held when it opened, reinstated or released when won, the
provider's dispute fee) is owed to the ledger once, under its own transfer id (ESC-1). A posting fee's dispute closed as lost in
full is told to jobs (`payment.charged_back` on the settlement outbox), which ends the posting.

Exactly once, whatever the deliveries: the event is stored insert-first in the transaction that
applies it (a redelivery finds it and changes nothing); the dispute's row is inserted first or
locked, so two events of one dispute applied at once take turns; and each booking is inserted
first on an id derived from its money movement, so two events that both carry it (created
and funds_withdrawn, re-fetched alike) book it once. A running fee (PayPal's, whose amount may
change after it was first seen) books each change as the difference under an id of its own,
read under the dispute's row lock, and a view older than one already applied changes no fee.
Everything is one local transaction: a crash before its commit leaves nothing, and the provider
delivers the event again. A dispute of several payments (PayPal's captures of several orders) is recorded and
booked against each payment, its share (ProviderDispute.shares, split exactly by the adapter's
rule: paypal_disputes), all in the event's one transaction, the shares' rows inserted or locked
in the payments' order (two events of it take turns, never deadlock). Money that cannot be
booked exactly (a refund in another currency, a share that cannot be known) is never guessed: it
is named in the audit entry, logged and counted (`hirepay_payment_dispute_money_unbooked_total`).

A plan purchase's (subscription transaction's) dispute goes the same way against the purchase:
its money between revenue (where the purchase's capture put it) and the provider's clearing, its
net withdrawals summed on the purchase (`disputed_minor`); closed lost for all the money the
purchase still held, the purchase is refunded as by a full refund at the provider
(credits.mark_refunded: REFUNDED, its unused credits revoked, the subsystem told); lost in part
it stays SUCCESS with its credits, as after a refund in part.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

from payments.domain import errors, ledger
from payments.domain.credits import (
    DISPUTED_KEY,
    CreditGrant,
    GrantKind,
    disputed,
    taken_back,
)
from payments.domain.disputes import (
    Dispute,
    DisputeMoney,
    DisputeSource,
    DisputeStatus,
    ProviderDispute,
)
from payments.domain.events import AuditEntry, EventType
from payments.domain.model import Payment
from payments.domain.provider import (
    InvalidRequest,
    OutcomeUnknown,
    PaymentProvider,
    ProviderEvent,
)
from payments.domain.refunds import Refund
from payments.domain.transactions import Transaction, TxnStatus
from payments.service_layer import metrics
from payments.service_layer.deps import Deps
from payments.service_layer.handlers.credits import mark_refunded, settle_grant
from payments.service_layer.handlers.provider_calls import CallRecord, call
from payments.service_layer.handlers.shared import emit
from payments.service_layer.ports import PaymentsUnitOfWork

log = logging.getLogger(__name__)
T = TypeVar("T")

# Metadata keys Hirepay puts on the payments it creates at a provider (webhooks.OUR_METADATA_KEYS).
_OURS = ("hirepay_payment_id", "transaction_id", "global_tx_id")
# The subsystem whose posting fees end their posting when charged back (the jobs service).
POSTING_SUBSYSTEM = "jobs"


@dataclass(frozen=True, slots=True)
class DisputeEventOutcome:
    applied: bool
    duplicate: bool


async def apply_dispute_event(
    deps: Deps, provider: PaymentProvider, event: ProviderEvent, payload: dict[str, Any]
) -> DisputeEventOutcome | None:
    """Apply a dispute event; None when there is nothing to apply it to (a provider whose
    disputes are not followed, a payment Hirepay never made): the caller records it only."""
    if not isinstance(provider, DisputeSource):
        return None
    records: list[CallRecord] = []
    dispute_id = event.object_id
    view = await _refetch(
        records, event, "retrieve_dispute", lambda: provider.retrieve_dispute(dispute_id)
    )
    if not view.payment_id and len(view.payment_ids) > 1:
        if view.shares:
            return await _apply_shares(deps, provider.name, event, payload, view, records)
        return await _several_payments(deps, provider.name, event, payload, view, records)
    async with deps.uow as uow:
        payment = await uow.payments.find_by_provider(payment_intent_id=view.payment_id)
        purchase = None
        if payment is None and view.payment_id:
            purchase = await uow.transactions.find_by_provider(payment_intent_id=view.payment_id)
    if purchase is not None:
        if purchase.provider != provider.name:
            return None  # another provider's purchase: recorded only
        return await _apply_to_purchase(
            deps, provider.name, event, payload, purchase, view, records
        )
    if payment is None:
        await _unknown_payment(provider, records, event, view)
        return None
    async with deps.uow as uow:
        now = deps.clock()
        if not await _stored_first(uow, provider.name, event, payload, now, applied=True):
            return DisputeEventOutcome(applied=False, duplicate=True)
        changed = await _apply(uow, deps, provider.name, event, payment, view, records, now)
        await uow.commit()
    return DisputeEventOutcome(applied=changed, duplicate=False)


async def _apply_to_purchase(
    deps: Deps,
    provider: str,
    event: ProviderEvent,
    payload: dict[str, Any],
    purchase: Transaction,
    view: ProviderDispute,
    records: list[CallRecord],
) -> DisputeEventOutcome:
    """A plan purchase's dispute, in one local transaction: the event stored insert-first, the
    purchase's row locked (its `disputed_minor` and status change under it: two events of its
    disputes take turns), then recorded and booked as a payment's dispute. Refunded by it, the
    revocation of its unused credits is booked at once, as after a refund (else the worker)."""
    async with deps.uow as uow:
        now = deps.clock()
        if not await _stored_first(uow, provider, event, payload, now, applied=True):
            return DisputeEventOutcome(applied=False, duplicate=True)
        txn = await uow.transactions.get(purchase.id, for_update=True)
        assert txn is not None
        changed, refunded = await _apply_purchase(
            uow, deps, provider, event, txn, view, records, now
        )
        await uow.commit()
    if refunded:
        await settle_grant(f"{GrantKind.REVOKE.value}:{txn.id}", deps)
    return DisputeEventOutcome(applied=changed, duplicate=False)


async def _stored_first(
    uow: PaymentsUnitOfWork,
    provider: str,
    event: ProviderEvent,
    payload: dict[str, Any],
    now: datetime,
    *,
    applied: bool,
) -> bool:
    """The event stored insert-first in the caller's transaction; False: received before."""
    return await uow.events.add(
        provider=provider,
        event_id=event.id,
        event_type=event.type,
        object_id=event.object_id,
        payload=payload,
        applied=applied,
        provider_created_at=event.created,
        received_at=now,
    )


@dataclass(slots=True)
class _Step:
    """A dispute's record in this transaction (inserted, or locked) and what this view did."""

    dispute: Dispute
    opened: bool  # first seen now
    was_status: str  # its status before ("" when opened now)
    was_closed: bool
    stale: bool  # older than a view applied before: it changes no running fee
    changed: bool  # status or money changed (or opened)

    @property
    def closed_now(self) -> bool:
        return self.dispute.closed and not self.was_closed


async def _observe(
    uow: PaymentsUnitOfWork, view: ProviderDispute, provider: str, subject_id: str, now: datetime
) -> _Step:
    """Record the provider's view of a dispute of `subject_id` (a payment, or a plan purchase):
    its row inserted first (and so locked by this transaction) or locked `FOR UPDATE`, so two
    events of one dispute take turns."""
    fresh = Dispute.opened(view, provider, subject_id, now)
    opened = await uow.disputes.add(fresh)
    dispute = fresh if opened else await uow.disputes.get(view.id, for_update=True)
    assert dispute is not None
    was_status = "" if opened else dispute.status.value
    was_closed = dispute.closed and not opened
    stale = dispute.stale(view)  # before observe() takes the view's time as the newest
    changed = dispute.observe(view, now) or opened
    return _Step(dispute, opened, was_status, was_closed, stale, changed)


async def _book(
    uow: PaymentsUnitOfWork,
    view: ProviderDispute,
    step: _Step,
    earlier_of: Callable[[], Awaitable[list[CreditGrant]]],
    grant_of: Callable[[DisputeMoney], CreditGrant | None],
) -> list[CreditGrant]:
    """Owe the ledger each money movement of the view not booked yet (insert-first on its id),
    a payment's or a purchase's (`grant_of`); a running fee (PayPal's) books the difference from
    what its subject's bookings (`earlier_of`, read once if needed) already hold, and nothing
    from a stale view. The bookings made now."""
    booked: list[CreditGrant] = []
    earlier: list[CreditGrant] | None = None
    for money in view.money:
        owed: DisputeMoney | None = money
        if money.running:
            if step.stale:  # an older view: the newer one already booked the fee it showed
                continue
            if earlier is None:
                earlier = await earlier_of()
            owed = money.adjustment(
                [f for g in earlier if (f := g.dispute_booked(money)) is not None]
            )
            if owed is None:
                continue
        grant = grant_of(owed)
        if grant is not None and await uow.credit_grants.add(grant):
            booked.append(grant)
    return booked


async def disputes_of_purchase(transaction_id: str, deps: Deps) -> list[Dispute]:
    """A plan purchase's disputes, oldest first (GetTransaction); its record holds the
    purchase's id where a payment's holds the payment's."""
    async with deps.uow as uow:
        return await uow.disputes.for_payment(transaction_id)


async def get_payment_with_disputes(
    payment_id: str, deps: Deps
) -> tuple[Payment, list[Dispute], list[Refund]]:
    """A payment, its disputes and its refunds, oldest first (GetPayment), read in one
    transaction (jobs books the refunds of offer money made at the provider from them)."""
    async with deps.uow as uow:
        payment = await uow.payments.get(payment_id)
        if payment is None:
            raise errors.PaymentNotFound(payment_id)
        found = await uow.disputes.for_payment(payment_id)
        return payment, found, await uow.refunds.list_for_payment(payment_id)


async def _apply(
    uow: PaymentsUnitOfWork,
    deps: Deps,
    provider: str,
    event: ProviderEvent,
    payment: Payment,
    view: ProviderDispute,
    records: list[CallRecord],
    now: datetime,
) -> bool:
    """Record the dispute's current view and owe the ledger its new money (the caller's
    transaction); whether the dispute changed."""
    step = await _observe(uow, view, provider, payment.id, now)
    dispute = step.dispute
    booked = [
        g.transfer_id
        for g in await _book(
            uow,
            view,
            step,
            lambda: uow.credit_grants.for_payment(payment.id),
            lambda owed: CreditGrant.dispute(payment, owed, view.amount_minor, now),
        )
    ]
    if step.changed:
        await uow.disputes.save(dispute)
    await uow.audit.add(
        _audit(event, step, booked, view, payment.currency, payment_id=payment.id),
        *(record.audit("webhook", payment_id=payment.id) for record in records),
    )
    if step.closed_now:
        await _tell_if_charged_back(uow, deps, dispute, payment.id, now)
    uow.after_commit(lambda: _count(dispute, opened=step.opened, closed=step.closed_now))
    if view.unbooked and step.closed_now:  # named in every audit entry; counted once, as it closes
        uow.after_commit(lambda: _unbooked(provider, view, view.unbooked_why, payment.id))
    return step.changed or bool(booked)


async def _apply_purchase(
    uow: PaymentsUnitOfWork,
    deps: Deps,
    provider: str,
    event: ProviderEvent,
    txn: Transaction,
    view: ProviderDispute,
    records: list[CallRecord],
    now: datetime,
) -> tuple[bool, bool]:
    """Record a purchase's dispute and owe the ledger its new money (the caller's transaction,
    holding the purchase's row lock); (whether it changed, whether it refunded the purchase).

    Each movement booked now adds what it took back to the purchase's `disputed_minor`, so a
    later full refund or revocation books only the rest. Lost, with the purchase's money all
    back with the buyer (its disputes' net withdrawals and refunds in part reach its price),
    the purchase is refunded in full as by a refund at the provider (credits.mark_refunded:
    REFUNDED, the revocation of its unused credits owed, `transaction.refunded` published); its
    money is booked already (by the withdrawals), so the revocation moves credits only. Lost in
    part, it stays SUCCESS with its credits (as after a refund in part)."""
    step = await _observe(uow, view, provider, txn.id, now)
    dispute = step.dispute
    grants = await _book(
        uow,
        view,
        step,
        lambda: uow.credit_grants.for_transaction(txn.id),
        lambda owed: CreditGrant.purchase_dispute(txn, owed, view.amount_minor, now),
    )
    booked = [g.transfer_id for g in grants]
    # What they take back from the buyer's payment: what their legs take out of revenue.
    net = -sum(ledger.revenue_delta(g.legs or [], txn.currency) for g in grants)
    if net:
        txn.metadata = {**txn.metadata, DISPUTED_KEY: str(disputed(txn) + net)}
        txn.updated_at = now
        await uow.transactions.save(txn)
    if step.changed:
        await uow.disputes.save(dispute)
    await uow.audit.add(
        _audit(event, step, booked, view, txn.currency, transaction_id=txn.id),
        *(record.audit("webhook", transaction_id=txn.id) for record in records),
    )
    refunded = (
        dispute.status is DisputeStatus.LOST
        and (step.closed_now or bool(booked))
        and txn.status is TxnStatus.SUCCESS
        and taken_back(txn) >= txn.amount_minor
    )
    if refunded:
        await mark_refunded(
            uow,
            deps,
            txn,
            actor="provider",
            reason=f"dispute {dispute.id} lost: charged back",
            key=f"dispute:{dispute.id}",
            now=now,
        )
    uow.after_commit(lambda: _count(dispute, opened=step.opened, closed=step.closed_now))
    if view.unbooked and step.closed_now:  # named in every audit entry; counted once, as it closes
        uow.after_commit(lambda: _unbooked(provider, view, view.unbooked_why, txn.id))
    return step.changed or bool(booked), refunded


async def _apply_shares(
    deps: Deps,
    provider: str,
    event: ProviderEvent,
    payload: dict[str, Any],
    view: ProviderDispute,
    records: list[CallRecord],
) -> DisputeEventOutcome:
    """A dispute of several payments, each its share (`view.shares`), in one local transaction:
    the event stored insert-first, then each share recorded (`<dispute>/<payment>`) and booked
    as a dispute of that payment (or plan purchase) alone, in the payments' order. A share of a
    payment Hirepay does not know is logged only (another integration's order). A purchase
    refunded by its share has its unused credits' revocation booked after the commit."""
    refunded: list[str] = []
    async with deps.uow as uow:
        now = deps.clock()
        if not await _stored_first(uow, provider, event, payload, now, applied=True):
            return DisputeEventOutcome(applied=False, duplicate=True)
        changed = False
        for share in sorted(view.shares, key=lambda s: s.payment_id):
            pi = share.payment_id
            payment = await uow.payments.find_by_provider(payment_intent_id=pi)
            if payment is not None:
                changed |= await _apply(uow, deps, provider, event, payment, share, records, now)
                continue
            purchase = await uow.transactions.find_by_provider(payment_intent_id=pi)
            if purchase is None or purchase.provider != provider:
                log.info("dispute %s of %s: not a payment of ours, its share ignored", view.id, pi)
                continue
            txn = await uow.transactions.get(purchase.id, for_update=True)
            assert txn is not None
            did, gone = await _apply_purchase(uow, deps, provider, event, txn, share, records, now)
            changed |= did
            if gone:
                refunded.append(txn.id)
        await uow.commit()
    for txn_id in refunded:
        await settle_grant(f"{GrantKind.REVOKE.value}:{txn_id}", deps)
    return DisputeEventOutcome(applied=changed, duplicate=False)


async def _several_payments(
    deps: Deps,
    provider: str,
    event: ProviderEvent,
    payload: dict[str, Any],
    view: ProviderDispute,
    records: list[CallRecord],
) -> DisputeEventOutcome:
    """A dispute of several payments whose shares are not known (a capture's gross amount in
    another currency than the dispute's: paypal_disputes): nothing is booked (one payment's
    money is never booked against another's). The event is stored unapplied, insert-first (a
    redelivery is a duplicate); each of Hirepay's payments it names gets an audit entry (with
    the provider calls made), and it is logged and counted once per event stored."""
    async with deps.uow as uow:
        now = deps.clock()
        if not await _stored_first(uow, provider, event, payload, now, applied=False):
            return DisputeEventOutcome(applied=False, duplicate=True)
        ours: list[str] = []
        for provider_payment_id in view.payment_ids:
            found = None
            if provider_payment_id:
                found = await uow.payments.find_by_provider(payment_intent_id=provider_payment_id)
            if found is not None and found.id not in ours:
                ours.append(found.id)
        note = (
            f"dispute of {len(view.payment_ids)} payments"
            f" ({', '.join(p or 'unknown' for p in view.payment_ids)}): the share of each is"
            " not known, nothing booked" + "".join(f" ({n})" for n in view.unbooked)
        )
        await uow.audit.add(
            *(
                AuditEntry(
                    action="webhook",
                    actor="provider",
                    reason=f"{event.type}: dispute of several payments, recorded, not applied",
                    details={
                        "event_id": event.id,
                        "event_type": event.type,
                        "object_id": view.id,
                        "status": view.status.value,
                        "amount_minor": str(view.amount_minor),
                        "currency": view.currency,
                        "unbooked": note,
                    },
                    payment_id=payment_id,
                )
                for payment_id in ours
            ),
            *(record.audit("webhook", payment_id=pid) for pid in ours for record in records),
        )
        uow.after_commit(
            lambda: _unbooked(
                provider, replace(view, unbooked=(note,)), "several_payments", ",".join(ours)
            )
        )
        await uow.commit()
    return DisputeEventOutcome(applied=False, duplicate=False)


def _unbooked(provider: str, view: ProviderDispute, why: str, payment_ids: str) -> None:
    """Money of a dispute that is not booked because it cannot be exactly: logged and counted,
    after the commit that recorded it."""
    metrics.DISPUTE_MONEY_UNBOOKED.labels(provider, why).inc()
    log.warning(
        "dispute %s (payments %s): %s", view.id, payment_ids or "-", "; ".join(view.unbooked)
    )


async def _tell_if_charged_back(
    uow: PaymentsUnitOfWork, deps: Deps, dispute: Dispute, payment_id: str, now: datetime
) -> None:
    """A posting fee's dispute closed as lost in full: the customer has the money back, so the
    jobs service is told (`payment.charged_back`) and ends the posting as after a full refund at
    the provider (PAY-4). Called once per dispute: only the transaction that closes it (the
    dispute's row is locked) gets here. Offer money, direct job payments and coin purchases are
    not postings: recorded and booked only, as before."""
    payment = await uow.payments.get(payment_id)  # as of now (refunds since it was read)
    if (
        payment is None
        or payment.subsystem != POSTING_SUBSYSTEM
        or ledger.purpose_of(payment.metadata) is not ledger.Purpose.FEE
        or not dispute.charges_back_in_full(payment.captured_minor, payment.refunded_minor)
    ):
        return
    await emit(uow, deps.config, [EventType.PAYMENT_CHARGED_BACK], now, payment=payment)


def _count(dispute: Dispute, *, opened: bool, closed: bool) -> None:
    """Metrics of what the committed transaction recorded (once per dispute and step)."""
    if opened:
        metrics.DISPUTES_OPENED.labels(dispute.provider, dispute.reason or "unknown").inc()
        metrics.DISPUTED.labels(dispute.currency).inc(dispute.amount_minor)
    if closed:
        metrics.DISPUTES_CLOSED.labels(dispute.provider, dispute.outcome).inc()


def _audit(
    event: ProviderEvent,
    step: _Step,
    booked: list[str],
    view: ProviderDispute,
    currency: str,
    *,
    payment_id: str = "",
    transaction_id: str = "",
) -> AuditEntry:
    """The webhook's audit entry (PAY-15): the dispute's step and the bookings it owed, on the
    payment's (or the plan purchase's) audit trail."""
    dispute, before = step.dispute, step.was_status
    details = {
        "event_id": event.id,
        "event_type": event.type,
        "object_id": dispute.id,
        "from": before,
        "to": dispute.status.value,
        "amount_minor": str(dispute.amount_minor),
        "currency": dispute.currency,
        "withdrawn_minor": str(dispute.withdrawn_minor),
        "reinstated_minor": str(dispute.reinstated_minor),
        "fee_minor": str(dispute.fee_minor),
    }
    if booked:
        details["transfer_ids"] = ",".join(booked)
    if view.unbooked:
        details["unbooked"] = "; ".join(view.unbooked)
    if view.split:  # a share of a dispute of several payments: by which rule
        details["split"] = view.split
    other = [m for m in view.money if m.currency and m.currency != currency]
    if other:  # settled in another currency: the amount booked in the payment's, the fee in its
        details["settled_in"] = ",".join(sorted({m.currency for m in other}))
        details["settled"] = ",".join(
            f"{m.id}:{m.amount_minor} {m.currency} fee {m.fee_minor} rate {m.exchange_rate or '-'}"
            for m in other
        )
    return AuditEntry(
        action="webhook",
        actor="provider",
        reason=f"{event.type}: dispute {before or 'new'} -> {dispute.status.value}",
        details=details,
        payment_id=payment_id,
        transaction_id=transaction_id,
    )


async def _refetch(
    records: list[CallRecord],
    event: ProviderEvent,
    operation: str,
    fetch: Callable[[], Awaitable[T]],
) -> T:
    """The provider's answer, or PROVIDER_UNAVAILABLE (the provider delivers the event again)."""
    try:
        return await call(records, operation, "", fetch)
    except (OutcomeUnknown, InvalidRequest) as exc:
        metrics.count(metrics.WEBHOOK_EVENTS, event.type, "provider_error")
        raise errors.ProviderUnavailable(
            f"could not re-fetch {event.object_id} from the provider: {exc.message}",
            metadata={"event_id": event.id},
        ) from None


async def _unknown_payment(
    provider: PaymentProvider,
    records: list[CallRecord],
    event: ProviderEvent,
    view: ProviderDispute,
) -> None:
    """A dispute of a payment with no local record: refused (retried) if the payment is ours and
    its record not committed yet (the sandbox's dispute card disputes within the capture's
    answer), else left to the caller to record (another integration's payment)."""
    if not view.payment_id:
        return
    pi = view.payment_id
    intent = await _refetch(
        records, event, "retrieve_payment", lambda: provider.retrieve_payment(pi)
    )
    if any(intent.metadata.get(key) for key in _OURS):
        metrics.count(metrics.WEBHOOK_EVENTS, event.type, "not_applicable_yet")
        raise errors.EventNotApplicableYet(
            f"the payment of dispute {view.id} is not known yet; retry later",
            metadata={"event_id": event.id, "object_id": event.object_id},
        )
    log.info("dispute %s of %s: not a payment of ours, ignored", view.id, view.payment_id)
