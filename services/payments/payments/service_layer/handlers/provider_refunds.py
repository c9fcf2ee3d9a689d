"""Refunds made at the provider, outside Hirepay (a refund from the provider's dashboard, or the
provider refunding on its own), learned by webhook and booked exactly like Hirepay's own refunds
(ESC-1: platform revenue equals captured fees minus refunds; API-4 statuses; PAY-15 audit).

A refund event is never trusted: the payment's refunds are re-fetched from the provider, and
each succeeded one that Hirepay has no record of is recorded once, under the payment's row lock,
as a succeeded refund with request id `provider:<provider refund id>` (unique per payment, like
the provider refund id itself): the payment's refunded amount and state follow, the ledger
booking `payment:<id>:refund:<refund id>` is owed in the same transaction and a
`payment.refunded` settlement event tells the subsystem that asked for the payment (jobs ends a
fully refunded posting). A refund Hirepay made itself carries `hirepay_refund_id` in its
metadata (and, once answered, its provider refund id on its record): its request, or the
poller, records it; the event changes nothing. Twins and redeliveries find every refund recorded
(the event id is stored once, and the payment's lock serializes events about one payment).

A provider that sends no refund event (Fatora: its port's `refunds_by_event` is False) has its
refunds made at its dashboard found by the provider reconciliation (OPS-3, audit.py), which
hands the refunds it listed to the same core (book_provider_refunds, origin RECONCILIATION):
recorded, booked and published alike, on the audit trail as found by the reconciliation and
counted `reconciled`. Its refunds carry no metadata of ours, so the core books nothing for the
reconciliation while a refund of Hirepay's own is asked and not answered (the one listed may be
that very one): that refund's answer records it, and a later round finds nothing more. A plan
purchase paid through such a provider is read by the reconciliation too, and its refunds handed
to the purchase's core (book_purchase_refunds), the webhook's own.

A refund recorded SUCCEEDED (Hirepay's own or one made at the provider) that the provider now
reports failed (Stripe: succeeded -> failed, the card closed since) is reversed in the same
transaction: its record FAILED, the payment's refunded amount and state given back, its booking
reversed by one of its own, the coins it took given back (refund_failures.py); marketplace offer
money's booking is jobs', so a `payment.refund_failed` settlement event tells jobs instead.

The coins a coin purchase or a direct job payment issued are taken back by the same hold as a
Hirepay refund's (refunds.advance_refund); coins no longer there are recorded short, never taken
below zero. A subscription purchase refunded in full is REFUNDED with its unused credits revoked,
as by the admin's refund (credits.mark_refunded); one refunded in part has that money booked
and keeps its credits (_apply_to_purchase).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from hirepay_platform.ids import new_id
from payments.domain import errors, ledger
from payments.domain.credits import (
    REFUNDED_KEY,
    CreditGrant,
    GrantKind,
    disputed,
    refunded_in_part,
    taken_back,
)
from payments.domain.events import AuditEntry, EventType
from payments.domain.model import TAKEN, Payment
from payments.domain.provider import (
    InvalidRequest,
    OutcomeUnknown,
    PaymentProvider,
    ProviderEvent,
    ProviderRefund,
    RefundState,
)
from payments.domain.reconciliation import refunds_in_flight
from payments.domain.refunds import (
    PROVIDER_REQUEST_PREFIX,
    CoinsState,
    Refund,
    RefundStatus,
)
from payments.domain.transactions import Transaction, TxnStatus
from payments.service_layer import metrics
from payments.service_layer.deps import Deps
from payments.service_layer.handlers.credits import mark_refunded, settle_grant
from payments.service_layer.handlers.provider_calls import CallRecord, call
from payments.service_layer.handlers.refund_failures import reverse_failed_refund
from payments.service_layer.handlers.refunds import advance_refund
from payments.service_layer.handlers.shared import emit, owe_booking
from payments.service_layer.ports import EventRecord, PaymentsUnitOfWork

log = logging.getLogger(__name__)

# The metadata key Hirepay's own refunds carry at the provider (refunds._ask_provider).
OUR_REFUND_KEY = "hirepay_refund_id"
# The reason recorded for a refund the provider gives none for (a dashboard refund may have none).
NO_REASON = "refunded_at_provider"
# Reasons a provider gives that are kept as metric labels; any other is counted as NO_REASON.
KNOWN_REASONS = frozenset(
    {"duplicate", "fraudulent", "requested_by_customer", "expired_uncaptured_charge"}
)


@dataclass(frozen=True, slots=True)
class RefundEventOutcome:
    """What applying a refund event did: whether it recorded a refund, or was seen before."""

    applied: bool
    duplicate: bool
    # A purchase's: the money it booked as refunded (0: none), and whether it booked the
    # purchase refunded in full (REFUNDED, its unused credits revoked).
    booked_minor: int = 0
    in_full: bool = False


async def apply_refund_event(
    deps: Deps, provider: PaymentProvider, event: ProviderEvent, record: EventRecord
) -> RefundEventOutcome | None:
    """Bring a payment's refunds up to date with the provider's (re-fetched), once per event
    (`record`: the event's row). None for an event about no payment of this provider (the
    caller records it, unapplied)."""
    intent_id = event.payment_id
    payment: Payment | None = None
    if intent_id:
        async with deps.uow as uow:
            payment = await uow.payments.find_by_provider(payment_intent_id=intent_id)
    if payment is None and intent_id:
        return await _apply_to_purchase(deps, provider, event, record, intent_id)
    if payment is None or payment.provider != provider.name:
        return None  # not a payment of this provider: recorded only
    if payment.final and payment.state not in TAKEN:
        # Nothing was taken, so no refund is Hirepay's to book: a provider without a void
        # refunds the authorization Hirepay let go by itself (Razorpay's auto-refund of a
        # payment never captured, refund.processed). Recorded only; no retry could apply it.
        metrics.count(metrics.PROVIDER_REFUNDS, provider.name, "not_captured")
        return None
    if payment.state not in TAKEN:
        # Refunded, so captured at the provider, but the capture's answer is not recorded yet
        # (the poller is resolving it): refused, so the provider delivers it again.
        raise _not_yet(
            Origin(event), f"payment {payment.id} is {payment.state.value}, not captured yet"
        )
    records: list[CallRecord] = []
    found = await _refunds_of(provider, records, event, intent_id)
    return await book_provider_refunds(deps, payment.id, found, Origin(event, record), records)


@dataclass(frozen=True, slots=True)
class Origin:
    """What told Hirepay of a payment's refunds at the provider: a webhook event (`event`, its
    row `record` claimed in the transaction that books), or the reconciliation (both None) for a
    provider whose refunds arrive by no event (PaymentProvider.refunds_by_event False)."""

    event: ProviderEvent | None = None
    record: EventRecord | None = None

    @property
    def by_reconciliation(self) -> bool:
        return self.event is None

    @property
    def actor(self) -> str:
        """Who is on the audit trail: the provider's event, or the reconciliation's read."""
        return "reconciliation" if self.event is None else "provider"

    @property
    def action(self) -> str:
        return "reconcile" if self.event is None else "webhook"

    def details(self) -> dict[str, str]:
        if self.event is None:
            return {"found_by": "reconciliation"}
        return {"event_id": self.event.id}


RECONCILIATION = Origin()


async def book_provider_refunds(
    deps: Deps,
    payment_id: str,
    found: list[ProviderRefund],
    origin: Origin,
    records: list[CallRecord] | None = None,
) -> RefundEventOutcome:
    """The one core that books refunds made at the provider, whoever found them (a webhook
    event, or the reconciliation): `found` is the payment's refunds as the provider listed them
    (re-fetched, never an event's copy). Under the payment's row lock each succeeded one Hirepay
    has no record of is recorded once and booked, the payment's state following and its
    `payment.refunded` settlement event published; a succeeded one now failed is reversed; the
    coins they take are taken back (or given back) after the commit. An event is claimed in the
    same transaction (a twin finds it claimed: `duplicate`).

    The reconciliation books only what its read still judges: a refund of Hirepay's own asked
    and not answered (it may be the very refund listed: Fatora's refunds carry no metadata of
    ours) or a payment not captured here leaves it to a later round, which reads again; so does
    a refund the records cannot judge yet (EventNotApplicableYet, raised to an event's caller)."""
    async with deps.uow as uow:
        now = deps.clock()
        if origin.record is not None and not await uow.events.claim(origin.record):
            return RefundEventOutcome(applied=False, duplicate=True)
        p = await uow.payments.get(payment_id, for_update=True)
        assert p is not None
        known = await uow.refunds.list_for_payment(p.id)
        if origin.by_reconciliation and (p.state not in TAKEN or refunds_in_flight(known)):
            return RefundEventOutcome(applied=False, duplicate=False)  # nothing written
        try:
            booked, reversed_ = await _record_new_refunds(uow, deps, p, known, found, origin, now)
        except errors.EventNotApplicableYet:
            if not origin.by_reconciliation:
                raise
            return RefundEventOutcome(applied=False, duplicate=False)
        if origin.by_reconciliation and not (booked or reversed_):
            return RefundEventOutcome(applied=False, duplicate=False)
        await uow.audit.add(
            _found_audit(origin, p, booked, reversed_),
            *(record.audit(origin.action, payment_id=p.id) for record in records or ()),
        )
        await uow.commit()
    for ref in (*booked, *reversed_):
        if ref.coins_owed:  # taken back; or, for a reversed one, a hold still owed released
            await _take_coins_back(deps, ref, p, origin.action)
    return RefundEventOutcome(applied=bool(booked or reversed_), duplicate=False)


async def _apply_to_purchase(
    deps: Deps, provider: PaymentProvider, event: ProviderEvent, record: EventRecord, intent: str
) -> RefundEventOutcome | None:
    """A refund of a subscription purchase (a plan transaction, API-4) made at the provider.
    Refunded in full (its refunds reach its amount): REFUNDED with its unused credits revoked,
    as by the admin's refund (credits.mark_refunded), booking the money not booked yet. Refunded
    in part: each such refund's money is booked once (`payment:<txn>:refund:<re_...>`, back to
    clearing out of revenue), the purchase stays SUCCESS and keeps its credits (a plan's
    credits are sold together: a refund of part of its price does not say which to take back;
    README "Refunds made at the provider"). The admin's own refund (its `transaction_id` in the
    refund's metadata) is left to its request. None: not a purchase of this provider."""
    async with deps.uow as uow:
        txn = await uow.transactions.find_by_provider(payment_intent_id=intent)
    if txn is None or txn.provider != provider.name:
        if event.metadata.get("hirepay_payment_id") or event.metadata.get("transaction_id"):
            # Ours, its capture not recorded yet: refused so that the provider delivers it again.
            raise _not_yet(Origin(event), "its payment is not known yet")
        return None
    records: list[CallRecord] = []
    found = await _refunds_of(provider, records, event, intent)
    return await book_purchase_refunds(deps, txn.id, found, Origin(event, record), records)


async def book_purchase_refunds(
    deps: Deps,
    transaction_id: str,
    found: list[ProviderRefund],
    origin: Origin,
    records: list[CallRecord] | None = None,
) -> RefundEventOutcome:
    """The one core that books refunds of a plan purchase made at the provider, whoever found
    them (a webhook event, or the reconciliation for a provider whose refunds arrive by no event,
    Fatora): `found` is the purchase payment's refunds as the provider listed them (re-fetched,
    never an event's copy). Under the purchase's row lock: refunded in full, REFUNDED with its
    unused credits revoked (credits.mark_refunded); in part, each refund's money booked once. An
    event is claimed in the same transaction (a twin finds it claimed: `duplicate`).

    A refund carrying the admin's `transaction_id` is left to the admin's request. Fatora's
    refunds carry no metadata of ours, so the reconciliation cannot tell the admin's refund from
    one made at the dashboard: racing the admin's request, whichever takes the row lock first
    marks the purchase REFUNDED, the other finds it so and books nothing (the revocation is
    keyed by the purchase: booked once). The reconciliation writes nothing when nothing moved."""
    refunded = [r for r in found if r.state is RefundState.SUCCEEDED]
    total = sum(r.amount_minor for r in refunded)
    by_admin = any(r.metadata.get("transaction_id") == transaction_id for r in found)
    changed = in_full = False
    booked = 0
    async with deps.uow as uow:
        now = deps.clock()
        if origin.record is not None and not await uow.events.claim(origin.record):
            return RefundEventOutcome(applied=False, duplicate=True)
        stored = await uow.transactions.get(transaction_id, for_update=True)
        assert stored is not None
        if stored.status is TxnStatus.SUCCESS and refunded and not by_admin:
            ids = ",".join(r.id for r in refunded)
            # Its disputes' net withdrawals are back with the buyer too (disputes.py).
            if total + disputed(stored) >= stored.amount_minor:
                rest = stored.amount_minor - taken_back(stored)
                found_by = " (found by the reconciliation)" if origin.by_reconciliation else ""
                await mark_refunded(
                    uow,
                    deps,
                    stored,
                    actor=origin.actor,
                    reason=f"refunded at the provider ({ids}){found_by}",
                    key=f"{PROVIDER_REQUEST_PREFIX}{ids}",
                    now=now,
                )
                changed, booked, in_full = True, rest, True
                uow.after_commit(
                    functools.partial(
                        _count_purchase, stored.provider, "booked", rest, stored, origin
                    )
                )
            else:
                added = await _book_purchase_refunds(uow, stored, refunded, now, origin)
                changed, booked = added > 0, added
                if changed:
                    uow.after_commit(
                        functools.partial(
                            _count_purchase, stored.provider, "partial", added, stored, origin
                        )
                    )
        if origin.by_reconciliation and not changed:
            return RefundEventOutcome(applied=False, duplicate=False)  # nothing written
        await uow.audit.add(
            _purchase_audit(origin, stored, total),
            *(r.audit(origin.action, transaction_id=stored.id) for r in records or ()),
        )
        await uow.commit()
    if changed and stored.status is TxnStatus.REFUNDED:
        await settle_grant(f"{GrantKind.REVOKE.value}:{transaction_id}", deps)
    elif changed:
        for remote in refunded:
            await settle_grant(f"{GrantKind.PURCHASE_REFUND.value}:{remote.id}", deps)
    return RefundEventOutcome(changed, False, booked, in_full)


def _purchase_audit(origin: Origin, stored: Transaction, total: int) -> AuditEntry:
    """PAY-15: what the provider's refunds of a purchase did, and what told Hirepay of them."""
    state = f"purchase {stored.status.value}, {total} refunded"
    event = origin.event
    if event is None:
        return AuditEntry(
            action=origin.action,
            actor=origin.actor,
            reason=f"found by the reconciliation ({stored.provider} sends no refund event): {state}",
            details={**origin.details(), "object_id": stored.provider_payment_intent_id},
            transaction_id=stored.id,
        )
    return AuditEntry(
        action="webhook",
        actor="provider",
        reason=f"{event.type}: {state}",
        details={
            "event_id": event.id,
            "event_type": event.type,
            "object_id": stored.provider_payment_intent_id,
        },
        transaction_id=stored.id,
    )


async def _book_purchase_refunds(
    uow: PaymentsUnitOfWork,
    stored: Transaction,
    refunded: list[ProviderRefund],
    now: datetime,
    origin: Origin,
) -> int:
    """Book each refund of part of a purchase not booked yet (insert-first on its booking's id,
    under the purchase's row lock), adding its money to the purchase's `refunded_minor`; the
    money booked now. The credits stay with the buyer."""
    added = 0
    for remote in refunded:
        grant = CreditGrant.purchase_refund(stored, remote.id, remote.amount_minor, now)
        if await uow.credit_grants.add(grant):
            added += remote.amount_minor
            await uow.audit.add(
                AuditEntry(
                    action="refund",
                    actor=origin.actor,
                    reason=(
                        f"refund {remote.id} of part of the purchase made at the provider:"
                        f" {remote.amount_minor} {stored.currency} booked, credits kept"
                    ),
                    details={
                        "provider_refund_id": remote.id,
                        "amount_minor": str(remote.amount_minor),
                        "transfer_id": grant.transfer_id,
                    },
                    transaction_id=stored.id,
                )
            )
    if added:
        stored.metadata = {**stored.metadata, REFUNDED_KEY: str(refunded_in_part(stored) + added)}
        stored.updated_at = now
        await uow.transactions.save(stored)
    return added


def _count_purchase(
    provider: str, result: str, booked: int, txn: Transaction, origin: Origin
) -> None:
    """OPS-1, once committed: `booked` is the money this event (or reconciliation) booked (for a
    full refund, what the refunds in part before it had not); one found by the reconciliation is
    counted `purchase_reconciled` (its provider sent no event)."""
    found = "reconciled" if origin.by_reconciliation and result == "booked" else result
    metrics.count(metrics.PROVIDER_REFUNDS, provider, f"purchase_{found}")
    metrics.REFUNDS.labels(NO_REASON, "succeeded").inc()
    metrics.REFUNDED.labels(txn.currency).inc(booked)
    if result == "partial":
        log.info(
            "purchase %s: %d %s of %d refunded at the provider: booked, the credits kept",
            txn.id,
            booked,
            txn.currency,
            txn.amount_minor,
        )


async def _refunds_of(
    provider: PaymentProvider, records: list[CallRecord], event: ProviderEvent, intent: str
) -> list[ProviderRefund]:
    """Every refund of the provider's payment, re-fetched (never the event's copy)."""
    try:
        return await call(records, "list_refunds", "", lambda: provider.list_refunds(intent))
    except (OutcomeUnknown, InvalidRequest) as exc:
        metrics.count(metrics.WEBHOOK_EVENTS, event.type, "provider_error")
        raise errors.ProviderUnavailable(
            f"could not re-fetch the refunds of {intent} from the provider: {exc.message}",
            metadata={"event_id": event.id},
        ) from None


async def _record_new_refunds(
    uow: PaymentsUnitOfWork,
    deps: Deps,
    p: Payment,
    known: list[Refund],
    found: list[ProviderRefund],
    origin: Origin,
    now: datetime,
) -> tuple[list[Refund], list[Refund]]:
    """Record the provider's succeeded refunds Hirepay has no record of (`known`, read under
    the payment's lock the caller holds): each booked, the payment's state following; and
    reverse the succeeded ones it reports failed since. Returns those booked and those
    reversed."""
    by_provider_id = {r.provider_refund_id: r for r in known if r.provider_refund_id}
    by_id = {r.id: r for r in known}
    booked: list[Refund] = []
    reversed_: list[Refund] = []
    for remote in found:
        ours = by_provider_id.get(remote.id) or by_id.get(remote.metadata.get(OUR_REFUND_KEY, ""))
        if ours is not None:
            if ours.status is RefundStatus.PENDING and remote.state is RefundState.FAILED:
                # Ours, its answer not recorded yet (lost: the poller replays it, and the replay
                # answers what Stripe said first, succeeded): refused, so that the provider
                # delivers the failure again once the record says what it reverses.
                raise _not_yet(origin, f"refund {ours.id} is not recorded yet")
            if _judge_known(p, ours, remote):
                done = await reverse_failed_refund(uow, p, ours, remote, origin.event, now)
                reversed_ += [done] if done is not None else []
            continue
        if remote.state is not RefundState.SUCCEEDED:
            # Pending: booked when it succeeds (its refund.updated); failed: nothing moved.
            metrics.count(metrics.PROVIDER_REFUNDS, p.provider, "pending")
            continue
        ref = _provider_refund(p, remote, now, deps)
        p.record_provider_refund(ref.amount_minor, now)
        await uow.refunds.add(ref)
        await owe_booking(uow, [EventType.PAYMENT_REFUNDED], now, p, ref)
        await uow.audit.add(_booked_audit(ref, remote, origin))
        booked.append(ref)
        by_provider_id[remote.id] = ref
    if booked:
        total = await uow.refunds.succeeded_total(p.id)
        events = p.settle_refund(total, now)
        await uow.payments.save(p)
        await emit(uow, deps.config, events, now, payment=p)
        uow.after_commit(functools.partial(_count_booked, p, booked, origin))
    elif reversed_:
        await uow.payments.save(p)
    if reversed_ and ledger.purpose_of(p.metadata) is ledger.Purpose.MARKETPLACE:
        # Offer money: jobs booked the refund (payments books none of it), so jobs books its
        # reversal; told on the marketplace stream in this transaction (README "Refunds of offer
        # money made at the provider").
        await emit(uow, deps.config, [EventType.PAYMENT_REFUND_FAILED], now, payment=p)
    return booked, reversed_


def _judge_known(p: Payment, ours: Refund, remote: ProviderRefund) -> bool:
    """A refund Hirepay has a record of: its own request (or the poller) records what the
    provider answered, so the event moves nothing; unless it recorded it succeeded and the
    provider now reports it failed (a card closed since, say): True, to be reversed."""
    if ours.status is RefundStatus.SUCCEEDED and remote.state is RefundState.FAILED:
        metrics.count(metrics.PROVIDER_REFUNDS, p.provider, "failed_after_success")
        return True
    metrics.count(metrics.PROVIDER_REFUNDS, p.provider, "own")
    return False


def _provider_refund(p: Payment, remote: ProviderRefund, now: datetime, deps: Deps) -> Refund:
    """The record of a succeeded refund made at the provider, with the coins it takes back."""
    coins = 0
    if ledger.issues_coins(p.metadata):
        coins = ledger.coins_refunded_at_provider(p.metadata, p.captured_minor, remote.amount_minor)
    request_id = f"{PROVIDER_REQUEST_PREFIX}{remote.id}"
    return Refund(
        id=new_id("rfd"),
        payment_id=p.id,
        request_id=request_id,
        amount_minor=remote.amount_minor,
        requested_minor=remote.amount_minor,
        currency=p.currency,
        reason=(remote.reason or NO_REASON)[:200],
        status=RefundStatus.SUCCEEDED,
        # Never sent by Hirepay: the key names the provider's refund it records.
        idempotency_key=f"refund:{p.id}:{request_id}",
        created_at=now,
        updated_at=now,
        provider_refund_id=remote.id,
        coins=coins,
        coins_state=CoinsState.RESERVING if coins else CoinsState.NONE,
        # With coins to take back, the poller takes the step if the webhook's own is lost.
        next_poll_at=now + timedelta(seconds=deps.config.lease_seconds) if coins else None,
    )


async def _take_coins_back(deps: Deps, ref: Refund, p: Payment, actor: str) -> None:
    """The coins a recorded refund takes back, now (the poller retries what fails)."""
    try:
        await advance_refund(deps, ref, p, actor=actor)
    except Exception:
        log.exception("refund %s: taking its coins back failed; the poller retries", ref.id)


def _count_booked(p: Payment, booked: list[Refund], origin: Origin) -> None:
    """OPS-1: refunds and their reasons, refunded money by currency (counted once committed);
    one booked by the reconciliation is counted `reconciled` (its provider sent no event)."""
    result = "reconciled" if origin.by_reconciliation else "booked"
    for ref in booked:
        reason = ref.reason if ref.reason in KNOWN_REASONS else NO_REASON
        metrics.REFUNDS.labels(reason, "succeeded").inc()
        metrics.REFUNDED.labels(p.currency).inc(ref.amount_minor)
        metrics.count(metrics.PROVIDER_REFUNDS, p.provider, result)
        if origin.by_reconciliation:
            log.warning(
                "payment %s: refund %s of %d %s made at %s, which sends no refund event, found"
                " by the reconciliation: recorded as %s and booked",
                p.id,
                ref.provider_refund_id,
                ref.amount_minor,
                p.currency,
                p.provider,
                ref.id,
            )


def _not_yet(origin: Origin, why: str) -> errors.EventNotApplicableYet:
    event = origin.event
    if event is None:  # the reconciliation's: it leaves the payment to a later round
        return errors.EventNotApplicableYet(f"refunds found by the reconciliation: {why}")
    metrics.count(metrics.WEBHOOK_EVENTS, event.type, "not_applicable_yet")
    return errors.EventNotApplicableYet(
        f"refund event {event.id}: {why}; retry later",
        metadata={"event_id": event.id, "object_id": event.object_id},
    )


def _booked_audit(ref: Refund, remote: ProviderRefund, origin: Origin) -> AuditEntry:
    """PAY-15: a refund made at the provider, recorded and booked, with who, when and why (and
    what found it: an event, or the reconciliation)."""
    found_by = " (found by the reconciliation)" if origin.by_reconciliation else ""
    return AuditEntry(
        action="refund",
        actor=origin.actor,
        reason=(
            f"refund {remote.id} made at the provider{found_by}: recorded as {ref.id}"
            f" ({ref.reason})"
        ),
        details={
            "refund_id": ref.id,
            "provider_refund_id": remote.id,
            "amount_minor": str(ref.amount_minor),
            "coins": str(ref.coins),
            "status": ref.status.value,
            **origin.details(),
        },
        payment_id=ref.payment_id,
    )


def _found_audit(
    origin: Origin, p: Payment, booked: list[Refund], reversed_: list[Refund]
) -> AuditEntry:
    failed = f", {len(reversed_)} failed after success reversed" if reversed_ else ""
    state = {"state": p.state.value, "refunded_minor": str(p.refunded_minor)}
    event = origin.event
    if event is None:
        return AuditEntry(
            action=origin.action,
            actor=origin.actor,
            reason=(
                f"found by the reconciliation ({p.provider} sends no refund event):"
                f" {len(booked)} refund(s) made at the provider recorded{failed}"
            ),
            details={**origin.details(), "object_id": p.provider_payment_id, **state},
            payment_id=p.id,
        )
    return AuditEntry(
        action=origin.action,
        actor=origin.actor,
        reason=f"{event.type}: {len(booked)} refund(s) made at the provider recorded{failed}",
        details={
            "event_id": event.id,
            "event_type": event.type,
            "object_id": event.object_id,
            **state,
        },
        payment_id=p.id,
    )
