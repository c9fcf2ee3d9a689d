"""Provider webhook ingestion (API-3, SEC-3): verify the signature on the raw bytes, then apply the
provider's CURRENT state of the object (re-fetched, never the event's payload) once per event id.

An event about an object that carries our ids but is not recorded yet is refused with
EVENT_NOT_APPLICABLE_YET and nothing is stored, so the provider delivers it again later; one about
an object Hirepay never created (no ids of ours) is acknowledged and ignored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hirepay_platform.untrusted import loads_json
from payments.domain import commands, errors
from payments.domain.events import AuditEntry
from payments.domain.model import Payment
from payments.domain.provider import (
    EventSubject,
    InvalidRequest,
    OutcomeUnknown,
    PaymentProvider,
    ProviderCheckout,
    ProviderEvent,
    ProviderPayment,
    SignatureInvalid,
)
from payments.domain.transactions import Transaction
from payments.service_layer import metrics
from payments.service_layer.deps import Deps
from payments.service_layer.handlers.checkouts import apply_to_transaction
from payments.service_layer.handlers.disputes import DisputeEventOutcome, apply_dispute_event
from payments.service_layer.handlers.engine import drive
from payments.service_layer.handlers.payouts import PayoutEventOutcome, apply_payout_event
from payments.service_layer.handlers.provider_calls import CallRecord, call
from payments.service_layer.handlers.provider_refunds import (
    RefundEventOutcome,
    apply_refund_event,
)
from payments.service_layer.handlers.shared import publish, refund_if_voided
from payments.service_layer.ports import EventRecord, FirstLook, PaymentsUnitOfWork

log = logging.getLogger(__name__)

HANDLED_SUBJECTS = frozenset({EventSubject.PAYMENT, EventSubject.CHECKOUT})
# How long an event waits for the request it raced (in_flight); a provider call usually answers
# within milliseconds of its event. Past this the event is re-fetched and applied as usual, well
# within the deadline the gateway gives a webhook's call (5 s).
RACE_WAIT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class _Applied:
    """What applying an event to a payment did."""

    changed: bool
    follow_up: Payment | None
    payment: Payment
    was_final: bool


@dataclass(frozen=True, slots=True)
class EventOutcome:
    event_id: str
    event_type: str
    applied: bool
    duplicate: bool


async def handle_provider_event(cmd: commands.ProviderEventDelivery, deps: Deps) -> EventOutcome:
    """Verify a delivery, then apply the provider's current view of its object once per event."""
    provider = deps.providers.get(cmd.provider or "stripe")
    event = await _verified(cmd, provider)
    metrics.WEBHOOK_LAG.observe(max(0.0, (datetime.now(UTC) - event.created).total_seconds()))
    # The body as the adapter parsed it (once, issue 13); verify_event refused a deep or bad one.
    payload = event.body if event.body is not None else loads_json(cmd.payload)
    if event.subject not in HANDLED_SUBJECTS:
        return await _not_a_payment(deps, provider, event, payload)
    look, txn, verdict = await _first_look(deps, provider, event, payload)
    if verdict == "duplicate":
        metrics.count(metrics.WEBHOOK_EVENTS, event.type, "duplicate")
        return EventOutcome(event.id, event.type, applied=False, duplicate=True)
    if verdict == "quiet":
        # Most events announce a step whose answer the request recorded already: storing the
        # event (done by the first look) is all there is to do (no re-fetch, no lock; a stale
        # view is never applied).
        return _stored(event, look)
    settled = await _settled_without_refetch(deps, provider, event, payload, look, txn)
    if settled is not None:
        return settled
    return await _apply_news(deps, provider, event, payload, look.payment, txn)


async def _apply_news(
    deps: Deps,
    provider: PaymentProvider,
    event: ProviderEvent,
    payload: dict[str, Any],
    payment: Payment | None,
    txn: Transaction | None,
) -> EventOutcome:
    """Re-fetch the event's object, then apply it under the payment's lock once per event."""
    records: list[CallRecord] = []
    try:
        session, intent = await _refetch(provider, records, event, txn)
    except (OutcomeUnknown, InvalidRequest) as exc:
        metrics.count(metrics.WEBHOOK_EVENTS, event.type, "provider_error")
        raise errors.ProviderUnavailable(
            f"could not re-fetch {event.object_id} from the provider: {exc.message}",
            metadata={"event_id": event.id},
        ) from None
    async with deps.uow as uow:
        now = deps.clock()
        # Stored by the first look, or stored now.
        claimed = await uow.events.claim(_record(provider, event, payload, now))
        if not claimed:
            metrics.count(metrics.WEBHOOK_EVENTS, event.type, "duplicate")
            return EventOutcome(event.id, event.type, applied=False, duplicate=True)
        changed = False
        follow_up: Payment | None = None
        applied: _Applied | None = None
        if payment is not None:
            applied = await _apply_to_payment(
                uow, deps, event, payment.id, session, intent, records, now
            )
            changed, follow_up = applied.changed, applied.follow_up
        elif txn is not None:
            changed = await _apply_to_transaction(uow, deps, event, txn, session, intent, records)
        await uow.commit()
    if applied is not None:
        metrics.observe_final(applied.payment, applied.was_final)
    metrics.count(metrics.WEBHOOK_EVENTS, event.type, "applied" if changed else "no_effect")
    if follow_up is not None:
        await _follow_up(deps, follow_up)
    return EventOutcome(event.id, event.type, applied=changed, duplicate=False)


async def _first_look(
    deps: Deps, provider: PaymentProvider, event: ProviderEvent, payload: dict[str, Any]
) -> tuple[FirstLook, Transaction | None, str]:
    """The event's subject and what the event is: "quiet" (it tells nothing new: stored now,
    or before if a duplicate), "duplicate" (applied before) or "" (apply it).

    One statement stores the event and reads its payment (issue 13): an event about a payment
    costs one round trip when it tells nothing new. It is stored unapplied; the transaction that
    applies a news event claims it (EventRepository.claim), so an event whose applying never
    committed (the process died, the re-fetch failed) is applied when delivered again, never
    taken for a duplicate. An event about no payment is stored by the path that handles it.

    An event that races the request whose provider call it reports (in_flight: the provider sends
    it as it answers) first waits for that answer to be recorded, then looks once (usually quiet
    then; a lost answer leaves the payment pending and the event is applied as usual)."""
    ours = event.metadata.get("hirepay_payment_id", "")
    if ours:  # the id we put on the object: no read needed to know whether to wait
        await deps.in_flight.settled(ours, RACE_WAIT_SECONDS)
    async with deps.uow as uow:
        look = await uow.events.store_first(
            _record(provider, event, payload, deps.clock()),
            by_checkout=event.subject is EventSubject.CHECKOUT,
            ours=ours,
        )
        await uow.commit()  # nothing left: the statement committed itself
    payment = look.payment
    quiet = _tells_nothing_new(provider, event, payment)
    if (
        not quiet
        and payment is not None
        and payment.id != ours
        and await _request_answered(deps, payment)
    ):
        # Raced, but its object carries no id of ours: look again now that the answer is in.
        async with deps.uow as uow:
            payment = await uow.payments.get(payment.id)
        quiet = _tells_nothing_new(provider, event, payment)
    if quiet:
        return look, None, "quiet"
    if payment is not None:
        return look, None, "duplicate" if look.applied_before else ""
    async with deps.uow as uow:
        txn = await _transaction(uow, event)
        if await uow.events.exists(event.id):
            return look, txn, "duplicate"
    return look, txn, ""


async def _request_answered(deps: Deps, payment: Payment) -> bool:
    """Whether provider work on the payment was under way in this process and is now recorded
    (False: nothing here to wait for, or still going after RACE_WAIT_SECONDS)."""
    if not payment.needs_provider_work():
        return False
    return await deps.in_flight.settled(payment.id, RACE_WAIT_SECONDS)


async def _not_a_payment(
    deps: Deps, provider: PaymentProvider, event: ProviderEvent, payload: dict[str, Any]
) -> EventOutcome:
    """A withdrawal's payout (ESC-9) is applied to it, a refund or a dispute to its payment
    (provider_refunds.py, disputes.py); anything else is only recorded."""
    done: PayoutEventOutcome | RefundEventOutcome | DisputeEventOutcome | None = None
    if event.subject is EventSubject.PAYOUT:
        done = await apply_payout_event(deps, provider.name, event, payload)
    elif event.subject is EventSubject.REFUND:
        record = _record(provider, event, payload, deps.clock())
        done = await apply_refund_event(deps, provider, event, record)
    elif event.subject is EventSubject.DISPUTE:
        done = await apply_dispute_event(deps, provider, event, payload)
    if done is None:
        return await _store(deps, provider, event, payload, applied=False)
    outcome = "duplicate" if done.duplicate else "applied" if done.applied else "no_effect"
    metrics.count(metrics.WEBHOOK_EVENTS, event.type, outcome)
    return EventOutcome(event.id, event.type, applied=done.applied, duplicate=done.duplicate)


async def _settled_without_refetch(
    deps: Deps,
    provider: PaymentProvider,
    event: ProviderEvent,
    payload: dict[str, Any],
    look: FirstLook,
    txn: Transaction | None,
) -> EventOutcome | None:
    """The outcome of an event that needs no re-fetch (None: re-fetch and apply it): one about
    a payment or a transaction another provider made is only recorded."""
    payment = look.payment
    if not _made_by(provider, payment, txn):
        if payment is not None:  # stored by the first look
            return _stored(event, look)
        return await _store(deps, provider, event, payload, applied=False)
    if payment is None and txn is None:
        return await _unrecorded(deps, provider, event, payload)
    return None


def _stored(event: ProviderEvent, look: FirstLook) -> EventOutcome:
    """The outcome of an event the first look stored (or found stored) and that needs no more."""
    metrics.count(metrics.WEBHOOK_EVENTS, event.type, "no_effect" if look.stored else "duplicate")
    return EventOutcome(event.id, event.type, applied=False, duplicate=not look.stored)


def _tells_nothing_new(
    provider: PaymentProvider, event: ProviderEvent, payment: Payment | None
) -> bool:
    """Whether the event is about a payment of its provider and its view of it changes nothing."""
    return (
        payment is not None
        and event.subject in HANDLED_SUBJECTS
        and _made_by(provider, payment, None)
        and event.view is not None
        and payment.tells_nothing_new(event.view)
    )


def _made_by(provider: PaymentProvider, payment: Payment | None, txn: Transaction | None) -> bool:
    """Whether the event's provider made the payment: another provider's event never moves it."""
    made_with = payment.provider if payment is not None else txn.provider if txn else ""
    return not made_with or made_with == provider.name


async def _verified(
    cmd: commands.ProviderEventDelivery, provider: PaymentProvider
) -> ProviderEvent:
    """The event a delivery carries, verified the provider's way, or INVALID_SIGNATURE (nothing
    stored). A provider that verifies (or names the event's payment) by calling back, PayPal's
    verify API and a refund's capture, may not answer: PROVIDER_UNAVAILABLE, so the delivery is
    answered 503 and sent again (nothing stored)."""
    try:
        return await provider.verify_event(cmd.payload, cmd.signing_headers())
    except SignatureInvalid as exc:
        metrics.count(metrics.WEBHOOK_EVENTS, "unknown", "invalid_signature")
        log.warning("webhook refused: %s", exc.message)
        raise errors.InvalidSignature(f"webhook signature refused: {exc.message}") from None
    except (OutcomeUnknown, InvalidRequest) as exc:
        metrics.count(metrics.WEBHOOK_EVENTS, "unknown", "provider_error")
        raise errors.ProviderUnavailable(
            f"could not verify the delivery with the provider: {exc.message}"
        ) from None


async def _apply_to_payment(
    uow: PaymentsUnitOfWork,
    deps: Deps,
    event: ProviderEvent,
    payment_id: str,
    session: ProviderCheckout | None,
    intent: ProviderPayment | None,
    records: list[CallRecord],
    now: datetime,
) -> _Applied:
    """Apply the provider's view to a payment (in the caller's transaction): whether it changed,
    and the payment if a Void must be completed at the provider right away."""
    p = await uow.payments.get(payment_id, for_update=True)
    assert p is not None
    before = (p.state, p.captured_minor)
    was_final = p.final
    events = []
    if session is not None:
        events += p.apply_checkout(session, now)
    if intent is not None:
        events += p.apply_intent(intent, now)
    follow_up: Payment | None = None
    if p.needs_provider_work():
        if p.next_poll_at is None or p.next_poll_at > now:
            p.next_poll_at = now
        follow_up = p if p.pending_op is not None and p.void_requested else None
    else:
        config = deps.config
        p.finish_step(now, watch_base=config.watch_base, watch_max=config.watch_max)
    await refund_if_voided(uow, p, now, "webhook")
    await uow.payments.save(p)
    await uow.audit.add(
        _webhook_audit(event, p.id, "", before[0].value, p.state.value),
        *(record.audit("webhook", payment_id=p.id) for record in records),
    )
    await publish(uow, deps.config, events, now, payment=p)
    return _Applied(before != (p.state, p.captured_minor), follow_up, p, was_final)


async def _apply_to_transaction(
    uow: PaymentsUnitOfWork,
    deps: Deps,
    event: ProviderEvent,
    txn: Transaction,
    session: ProviderCheckout | None,
    intent: ProviderPayment | None,
    records: list[CallRecord],
) -> bool:
    """Apply the provider's view to a subscription transaction; returns whether it changed."""
    before_status = txn.status
    t = await apply_to_transaction(uow, deps, txn.id, session, intent, actor="webhook")
    await uow.audit.add(
        _webhook_audit(event, "", t.id, before_status.value, t.status.value),
        *(record.audit("webhook", transaction_id=t.id) for record in records),
    )
    return before_status is not t.status


async def _follow_up(deps: Deps, payment: Payment) -> None:
    """e.g. 3-D Secure completed after the saga voided: cancel the authorization now."""
    try:
        await drive(deps, payment, actor="webhook", direct=False)
    except Exception:
        log.exception("follow-up of payment %s failed; the poller will retry", payment.id)


def _webhook_audit(
    event: ProviderEvent, payment_id: str, transaction_id: str, before: str, after: str
) -> AuditEntry:
    return AuditEntry(
        action="webhook",
        actor="provider",
        reason=f"{event.type}: {before} -> {after}",
        details={
            "event_id": event.id,
            "event_type": event.type,
            "object_id": event.object_id,
            "from": before,
            "to": after,
        },
        payment_id=payment_id,
        transaction_id=transaction_id,
    )


async def _unrecorded(
    deps: Deps, provider: PaymentProvider, event: ProviderEvent, payload: dict[str, Any]
) -> EventOutcome:
    """An event about an object with no local record: acknowledged if Hirepay never created it,
    else refused so that the provider delivers it again (its record is being committed)."""
    if _created_elsewhere(event):
        # Another integration on the account, a dashboard test: no retry could ever apply it.
        log.info(
            "webhook %s about %s %s: not ours, ignored",
            event.id,
            event.subject.value,
            event.object_id,
        )
        return await _store(deps, provider, event, payload, applied=False)
    metrics.count(metrics.WEBHOOK_EVENTS, event.type, "not_applicable_yet")
    raise errors.EventNotApplicableYet(
        f"{event.subject.value} {event.object_id} is not known yet; retry later",
        metadata={"event_id": event.id, "object_id": event.object_id},
    )


# Metadata keys Hirepay puts on every provider object it creates (payments, checkouts).
OUR_METADATA_KEYS = ("hirepay_payment_id", "transaction_id", "global_tx_id")


def _created_elsewhere(event: ProviderEvent) -> bool:
    """Whether the event's object visibly was not created by Hirepay: it carries metadata, none of
    it ours. An event without metadata (PayPal's and Fatora's carry none) proves nothing, so it is
    retried rather than dropped."""
    return bool(event.metadata) and not any(event.metadata.get(k) for k in OUR_METADATA_KEYS)


async def _store(
    deps: Deps,
    provider: PaymentProvider,
    event: ProviderEvent,
    payload: dict[str, Any],
    *,
    applied: bool,
) -> EventOutcome:
    async with deps.uow as uow:
        await uow.autocommit()  # one insert-first statement: its own transaction
        record = _record(provider, event, payload, deps.clock())
        inserted = await uow.events.add(**record.values(), applied=applied)
        await uow.commit()
    metrics.count(metrics.WEBHOOK_EVENTS, event.type, "no_effect" if inserted else "duplicate")
    return EventOutcome(event.id, event.type, applied=False, duplicate=not inserted)


def _record(
    provider: PaymentProvider, event: ProviderEvent, payload: dict[str, Any], now: datetime
) -> EventRecord:
    return EventRecord(
        provider=provider.name,
        event_id=event.id,
        event_type=event.type,
        object_id=event.object_id,
        payload=payload,
        provider_created_at=event.created,
        received_at=now,
        # The text the payload was parsed from, when it is the adapter's parsed body.
        payload_text=event.body_text if payload is event.body else "",
    )


async def _transaction(uow: PaymentsUnitOfWork, event: ProviderEvent) -> Transaction | None:
    """The transaction an event about no payment is about (looked up by provider ids, then by
    the id we put in the object's metadata ourselves)."""
    if event.subject is EventSubject.PAYMENT:
        txn = await uow.transactions.find_by_provider(payment_intent_id=event.object_id)
    else:
        txn = await uow.transactions.find_by_provider(checkout_id=event.object_id)
    transaction_id = event.metadata.get("transaction_id")
    if txn is None and transaction_id:
        txn = await uow.transactions.get(transaction_id)
    return txn


async def _refetch(
    provider: PaymentProvider,
    records: list[CallRecord],
    event: ProviderEvent,
    txn: Transaction | None,
) -> tuple[ProviderCheckout | None, ProviderPayment | None]:
    """The provider's current view of the event's object (never the event's own copy)."""
    session: ProviderCheckout | None = None
    intent: ProviderPayment | None = None
    if event.subject is EventSubject.CHECKOUT:
        cs = event.object_id
        session = await call(
            records, "retrieve_checkout", "", lambda: provider.retrieve_checkout(cs)
        )
        pi = session.payment_id
        if pi:
            intent = await call(
                records, "retrieve_payment", "", lambda: provider.retrieve_payment(pi)
            )
    else:
        pi = event.object_id
        intent = await call(records, "retrieve_payment", "", lambda: provider.retrieve_payment(pi))
        cs = txn.provider_transaction_id if txn is not None else ""
        if txn is not None and cs:
            session = await call(
                records, "retrieve_checkout", "", lambda: provider.retrieve_checkout(cs)
            )
    return session, intent
