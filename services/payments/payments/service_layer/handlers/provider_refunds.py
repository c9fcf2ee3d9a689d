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
        raise _not_yet(event, f"payment {payment.id} is {payment.state.value}, not captured yet")
    records: list[CallRecord] = []
    found = await _refunds_of(provider, records, event, intent_id)
    async with deps.uow as uow:
        now = deps.clock()
        if not await uow.events.claim(record):
            return RefundEventOutcome(applied=False, duplicate=True)
        p = await uow.payments.get(payment.id, for_update=True)
        assert p is not None
        booked, reversed_ = await _record_new_refunds(uow, deps, p, found, event, now)
        await uow.audit.add(
            _webhook_audit(event, p, booked, reversed_),
            *(record.audit("webhook", payment_id=p.id) for record in records),
        )
        await uow.commit()
    for ref in (*booked, *reversed_):
        if ref.coins_owed:  # taken back; or, for a reversed one, a hold still owed released
            await _take_coins_back(deps, ref, p)
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
            raise _not_yet(event, "its payment is not known yet")
        return None
    records: list[CallRecord] = []
    found = await _refunds_of(provider, records, event, intent)
    refunded = [r for r in found if r.state is RefundState.SUCCEEDED]
    total = sum(r.amount_minor for r in refunded)
    by_admin = any(r.metadata.get("transaction_id") == txn.id for r in found)
    changed = False
    async with deps.uow as uow:
        now = deps.clock()
        if not await uow.events.claim(record):
            return RefundEventOutcome(applied=False, duplicate=True)
        stored = await uow.transactions.get(txn.id, for_update=True)
        assert stored is not None
        if stored.status is TxnStatus.SUCCESS and refunded and not by_admin:
            ids = ",".join(r.id for r in refunded)
            # Its disputes' net withdrawals are back with the buyer too (disputes.py).
            if total + disputed(stored) >= stored.amount_minor:
                rest = stored.amount_minor - taken_back(stored)
                await mark_refunded(
                    uow,
                    deps,
                    stored,
                    actor="provider",
                    reason=f"refunded at the provider ({ids})",
                    key=f"{PROVIDER_REQUEST_PREFIX}{ids}",
                    now=now,
                )
                changed = True
                uow.after_commit(
                    functools.partial(_count_purchase, stored.provider, "booked", rest, stored)
                )
            else:
                added = await _book_purchase_refunds(uow, stored, refunded, now)
                changed = added > 0
                if changed:
                    uow.after_commit(
                        functools.partial(
                            _count_purchase, stored.provider, "partial", added, stored
                        )
                    )
        await uow.audit.add(
            AuditEntry(
                action="webhook",
                actor="provider",
                reason=f"{event.type}: purchase {stored.status.value}, {total} refunded",
                details={"event_id": event.id, "event_type": event.type, "object_id": intent},
                transaction_id=stored.id,
            ),
            *(r.audit("webhook", transaction_id=stored.id) for r in records),
        )
        await uow.commit()
    if changed and stored.status is TxnStatus.REFUNDED:
        await settle_grant(f"{GrantKind.REVOKE.value}:{txn.id}", deps)
    elif changed:
        for remote in refunded:
            await settle_grant(f"{GrantKind.PURCHASE_REFUND.value}:{remote.id}", deps)
    return RefundEventOutcome(applied=changed, duplicate=False)


async def _book_purchase_refunds(
    uow: PaymentsUnitOfWork, stored: Transaction, refunded: list[ProviderRefund], now: datetime
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
                    actor="provider",
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


def _count_purchase(provider: str, result: str, booked: int, txn: Transaction) -> None:
    """OPS-1, once committed: `booked` is the money this event booked (for a full refund, what
    the refunds in part before it had not)."""
    metrics.count(metrics.PROVIDER_REFUNDS, provider, f"purchase_{result}")
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
    found: list[ProviderRefund],
    event: ProviderEvent,
    now: datetime,
) -> tuple[list[Refund], list[Refund]]:
    """Record the provider's succeeded refunds Hirepay has no record of (caller holds the
    payment's lock): each booked, the payment's state following; and reverse the succeeded
    ones it reports failed since. Returns those booked and those reversed."""
    known = await uow.refunds.list_for_payment(p.id)
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
                raise _not_yet(event, f"refund {ours.id} is not recorded yet")
            if _judge_known(p, ours, remote):
                done = await reverse_failed_refund(uow, p, ours, remote, event, now)
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
        await uow.audit.add(_booked_audit(ref, remote, event))
        booked.append(ref)
        by_provider_id[remote.id] = ref
    if booked:
        total = await uow.refunds.succeeded_total(p.id)
        events = p.settle_refund(total, now)
        await uow.payments.save(p)
        await emit(uow, deps.config, events, now, payment=p)
        uow.after_commit(functools.partial(_count_booked, p, booked))
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


async def _take_coins_back(deps: Deps, ref: Refund, p: Payment) -> None:
    """The coins a recorded refund takes back, now (the poller retries what fails)."""
    try:
        await advance_refund(deps, ref, p, actor="webhook")
    except Exception:
        log.exception("refund %s: taking its coins back failed; the poller retries", ref.id)


def _count_booked(p: Payment, booked: list[Refund]) -> None:
    """OPS-1: refunds and their reasons, refunded money by currency (counted once committed)."""
    for ref in booked:
        reason = ref.reason if ref.reason in KNOWN_REASONS else NO_REASON
        metrics.REFUNDS.labels(reason, "succeeded").inc()
        metrics.REFUNDED.labels(p.currency).inc(ref.amount_minor)
        metrics.count(metrics.PROVIDER_REFUNDS, p.provider, "booked")


def _not_yet(event: ProviderEvent, why: str) -> errors.EventNotApplicableYet:
    metrics.count(metrics.WEBHOOK_EVENTS, event.type, "not_applicable_yet")
    return errors.EventNotApplicableYet(
        f"refund event {event.id}: {why}; retry later",
        metadata={"event_id": event.id, "object_id": event.object_id},
    )


def _booked_audit(ref: Refund, remote: ProviderRefund, event: ProviderEvent) -> AuditEntry:
    """PAY-15: a refund made at the provider, recorded and booked, with who, when and why."""
    return AuditEntry(
        action="refund",
        actor="provider",
        reason=f"refund {remote.id} made at the provider: recorded as {ref.id} ({ref.reason})",
        details={
            "refund_id": ref.id,
            "provider_refund_id": remote.id,
            "amount_minor": str(ref.amount_minor),
            "coins": str(ref.coins),
            "status": ref.status.value,
            "event_id": event.id,
        },
        payment_id=ref.payment_id,
    )


def _webhook_audit(
    event: ProviderEvent, p: Payment, booked: list[Refund], reversed_: list[Refund]
) -> AuditEntry:
    failed = f", {len(reversed_)} failed after success reversed" if reversed_ else ""
    return AuditEntry(
        action="webhook",
        actor="provider",
        reason=f"{event.type}: {len(booked)} refund(s) made at the provider recorded{failed}",
        details={
            "event_id": event.id,
            "event_type": event.type,
            "object_id": event.object_id,
            "state": p.state.value,
            "refunded_minor": str(p.refunded_minor),
        },
        payment_id=p.id,
    )
