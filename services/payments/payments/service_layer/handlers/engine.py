"""The engine: one round of provider work for a payment.

Every provider call follows the same three steps: record the intent (the payment row, its stored
idempotency key and a lease) in one local transaction, call the provider outside any transaction,
record the outcome in a second one. A crash in between leaves a leased row whose lease expires; the
poller then replays the same call with the same idempotency key, so the provider either returns the
original result or performs the operation once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from hirepay_platform.errors import HirepayError, StaleRow
from hirepay_platform.reasons import FailureReason
from payments.domain import ledger
from payments.domain.events import AuditEntry, EventType
from payments.domain.model import Method, Payment, PaymentState, PendingOp
from payments.domain.provider import (
    AuthorizeRequest,
    CheckoutRequest,
    CheckoutState,
    Declined,
    InvalidRequest,
    OutcomeUnknown,
    PaymentProvider,
    ProviderCheckout,
    ProviderErrorInfo,
    ProviderPayment,
    ProviderStatus,
)
from payments.service_layer import metrics
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers.provider_calls import CallRecord, call
from payments.service_layer.handlers.shared import publish, refund_if_voided

log = logging.getLogger(__name__)


CANCELLABLE = frozenset(
    {
        ProviderStatus.AUTHORIZED,
        ProviderStatus.ACTION_REQUIRED,
        ProviderStatus.AWAITING_PAYMENT,
        ProviderStatus.FAILED,
    }
)


@dataclass(frozen=True, slots=True)
class Step:
    """What one round of provider work did."""

    payment: Payment
    declined: Declined | None = None
    refused: InvalidRequest | None = None
    unknown: OutcomeUnknown | None = None


def _authorize_request(p: Payment) -> AuthorizeRequest:
    return AuthorizeRequest(
        amount_minor=p.amount_minor,
        currency=p.currency,
        payment_method=p.payment_method_token,
        manual_capture=p.method is Method.CARD,
        description=p.description,
        metadata=p.provider_metadata,
        return_url=p.return_url,
        email=p.email,
    )


def _checkout_request(p: Payment, config: Policy, provider: str) -> CheckoutRequest:
    return CheckoutRequest(
        amount_minor=p.amount_minor,
        currency=p.currency,
        product_name=p.description or "Hirepay payment",
        success_url=p.return_url,
        cancel_url=config.cancel_url(p.id),
        metadata=p.provider_metadata,
        client_reference_id=p.id,
        # A posting's fee is authorized and captured by the saga; coins and job payments are
        # sales that capture on the page (Fatora takes every payment at once anyway).
        manual_capture=not ledger.captures_at_once(p.metadata),
        email=p.email,
        confirm_url=config.return_url(provider, p.id),
    )


async def advance_payment(deps: Deps, payment: Payment, *, actor: str, direct: bool) -> Step:
    """Do what the payment still needs from the provider, then record the outcome.

    `direct`: the caller just asked for the pending operation, so call it straight away; otherwise
    (polling) first learn the provider's current state, then do what is left. The create of an
    authorization is always replayed with its stored key: it returns the original answer if the
    first call went through, or performs it now.
    """
    p = payment
    records: list[CallRecord] = []
    intent: ProviderPayment | None = None
    checkout: ProviderCheckout | None = None
    declined = refused = unknown = None
    try:
        try:
            # Always the provider that made the payment, whatever the default is now.
            provider = deps.providers.of_existing(p.provider)
            if p.pending_op is PendingOp.AUTHORIZE and not (
                p.provider_payment_id or p.provider_checkout_id
            ):
                if p.method is Method.CHECKOUT:
                    request = _checkout_request(p, deps.config, provider.name)
                    checkout = await call(
                        records,
                        "create_checkout",
                        p.authorize_key,
                        lambda: provider.create_checkout(request, p.authorize_key),
                    )
                else:
                    intent = await call(
                        records,
                        "authorize",
                        p.authorize_key,
                        lambda: provider.authorize(_authorize_request(p), p.authorize_key),
                    )
            elif direct and p.pending_op is PendingOp.CAPTURE and p.provider_payment_id:
                intent = await call(
                    records,
                    "capture",
                    p.capture_key,
                    lambda: provider.capture(
                        p.provider_payment_id, p.capture_amount_minor, p.capture_key
                    ),
                )
            elif (
                direct
                and p.pending_op is PendingOp.VOID
                and p.provider_payment_id
                and p.method is not Method.CHECKOUT  # a session's intent: expire the session
            ):
                intent = await call(
                    records,
                    "cancel",
                    p.void_key,
                    lambda: provider.cancel(p.provider_payment_id, p.void_key),
                )
            else:
                intent, checkout = await _retrieve(records, provider, p)
            intent, checkout = await _follow_up(records, provider, p, intent, checkout)
        except InvalidRequest as exc:
            refused = exc
            if p.pending_op is not PendingOp.AUTHORIZE or p.provider_payment_id:
                # The provider refused a capture or cancel: learn what state it is really in.
                intent, checkout = await _retrieve(
                    records, deps.providers.of_existing(p.provider), p
                )
    except Declined as exc:
        declined = exc
    except InvalidRequest as exc:
        refused = refused or exc
    except OutcomeUnknown as exc:
        unknown = exc
    return await _record(
        deps, p, actor, _Outcome(records, intent, checkout, declined, refused, unknown)
    )


async def _retrieve(
    records: list[CallRecord], provider: PaymentProvider, p: Payment
) -> tuple[ProviderPayment | None, ProviderCheckout | None]:
    intent = checkout = None
    if p.provider_checkout_id and (not p.provider_payment_id or p.void_requested):
        checkout = await call(
            records,
            "retrieve_checkout",
            "",
            lambda: provider.retrieve_checkout(p.provider_checkout_id),
        )
        pi = checkout.payment_id or p.provider_payment_id
        if pi:
            intent = await call(
                records, "retrieve_payment", "", lambda: provider.retrieve_payment(pi)
            )
    elif p.provider_payment_id:
        intent = await call(
            records,
            "retrieve_payment",
            "",
            lambda: provider.retrieve_payment(p.provider_payment_id),
        )
    return intent, checkout


async def _follow_up(
    records: list[CallRecord],
    provider: PaymentProvider,
    p: Payment,
    intent: ProviderPayment | None,
    checkout: ProviderCheckout | None,
) -> tuple[ProviderPayment | None, ProviderCheckout | None]:
    """Given the provider's current view, do what is still owed: a requested void or capture.

    A void of a hosted checkout first expires the session (so the page can no longer take money;
    Stripe cancels an open session's intent only that way), then cancels an authorization."""
    expire_key = f"{p.void_key}:expire"  # its own key: one idempotency key, one operation
    if p.void_requested:
        if intent is not None and intent.status in CANCELLABLE:
            iid = intent.id
            if checkout is not None and checkout.state is CheckoutState.OPEN:
                cid = checkout.id
                try:
                    checkout = await call(
                        records,
                        "expire_checkout",
                        expire_key,
                        lambda: provider.expire_checkout(cid, expire_key),
                    )
                except InvalidRequest:
                    # The provider cannot close its page (Razorpay, PayPal). Money held for a
                    # manual capture is never taken without ours: the authorization is
                    # cancelled all the same. Otherwise the page could still take money.
                    if intent.status is not ProviderStatus.AUTHORIZED:
                        raise
                else:
                    intent = await call(
                        records, "retrieve_payment", "", lambda: provider.retrieve_payment(iid)
                    )
            if intent.status in CANCELLABLE:
                intent = await call(
                    records, "cancel", p.void_key, lambda: provider.cancel(iid, p.void_key)
                )
        elif intent is None and checkout is not None and checkout.state is CheckoutState.OPEN:
            cid = checkout.id
            checkout = await call(
                records,
                "expire_checkout",
                expire_key,
                lambda: provider.expire_checkout(cid, expire_key),
            )
    elif (
        p.pending_op is PendingOp.CAPTURE
        and intent is not None
        and intent.status is ProviderStatus.AUTHORIZED
    ):
        iid = intent.id
        intent = await call(
            records,
            "capture",
            p.capture_key,
            lambda: provider.capture(iid, p.capture_amount_minor, p.capture_key),
        )
    return intent, checkout


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What one round of provider work learnt, to be recorded."""

    records: list[CallRecord]
    intent: ProviderPayment | None
    checkout: ProviderCheckout | None
    declined: Declined | None
    refused: InvalidRequest | None
    unknown: OutcomeUnknown | None


async def _record(deps: Deps, payment: Payment, actor: str, outcome: _Outcome) -> Step:
    """Record the outcome on the payment as this process committed it (the usual case: nothing
    changed it during the call), one statement that applies only if so; else under its lock."""
    try:
        return await _record_step(deps, payment, actor, outcome, assumed=True)
    except StaleRow:
        return await _record_step(deps, payment, actor, outcome, assumed=False)


async def _record_step(
    deps: Deps, payment: Payment, actor: str, outcome: _Outcome, *, assumed: bool
) -> Step:
    """Record what one round of provider work learnt, in one local transaction: on `payment` as
    this process committed it (`assumed`: StaleRow, nothing written, if the row changed since),
    or on the row read under its lock."""
    config = deps.config
    records, intent, checkout = outcome.records, outcome.intent, outcome.checkout
    declined, refused, unknown = outcome.declined, outcome.refused, outcome.unknown
    payment_id = payment.id
    async with deps.uow as uow:
        now = deps.clock()
        if assumed:
            p: Payment | None = uow.payments.assume(payment)
        else:
            p = await uow.payments.get(payment_id, for_update=True)
        if p is None:  # the row was committed before any provider call
            raise HirepayError(f"payment {payment_id} vanished", reason="INTERNAL")
        before, pending, was_final = p.state, p.pending_op, p.final
        events: list[EventType] = []
        if checkout is not None:
            events += p.apply_checkout(checkout, now)
        if intent is not None:
            events += p.apply_intent(intent, now)
        if declined is not None:
            if declined.payment_id and not p.provider_payment_id:
                p.provider_payment_id = declined.payment_id
            events += p.decline(declined.error, now)
        if refused is not None:
            events += _apply_refusal(p, refused, intent is None and checkout is None, now)
        if unknown is not None and (p.pending_op is not None or p.state is PaymentState.UNKNOWN):
            p.mark_unknown(timeout=unknown.timeout, message=unknown.message, now=now)
        _schedule_next(p, config, now, retry_later=unknown is not None or refused is not None)
        await refund_if_voided(uow, p, now, actor)
        await uow.payments.save(p)
        entries = [record.audit(actor, payment_id=p.id) for record in records]
        if before is not p.state or pending is not p.pending_op:
            entries.append(_transition_audit(p, before, actor))
        await uow.audit.add(*entries)
        await publish(uow, config, events, now, payment=p)
        await uow.commit()
    _report_step(p, before, unknown, actor)
    metrics.observe_final(p, was_final)
    return Step(p, declined, refused, unknown)


def _apply_refusal(
    p: Payment, refused: InvalidRequest, unanswered: bool, now: datetime
) -> list[EventType]:
    """The provider refused the call. `unanswered`: no current view of the payment was learnt."""
    if unanswered and refused.status == 404 and p.provider_payment_id:
        # Neither the call nor the re-read found the payment: the provider does not know it
        # (e.g. it lost the intent). Nothing is held or taken there: final, never retried.
        return p.vanish(now)
    if unanswered:
        if p.pending_op is PendingOp.AUTHORIZE:
            reason = (
                FailureReason.INVALID_PAYMENT_DETAILS
                if refused.about_payment_method
                else FailureReason.VALIDATION_FAILED
            )
            err = ProviderErrorInfo(refused.code, "", refused.message, refused.param)
            return p.decline(err, now, reason)
        p.pending_op = None
    elif p.pending_op in (PendingOp.CAPTURE, PendingOp.VOID):
        # The provider's current state was applied; what it refused cannot be done.
        p.pending_op = None if not p.void_requested else p.pending_op
    return []


def _schedule_next(p: Payment, config: Policy, now: datetime, *, retry_later: bool) -> None:
    """When the poller looks at the payment again (never, if nothing is left to do)."""
    if not p.needs_provider_work():
        p.finish_step(now, watch_base=config.watch_base, watch_max=config.watch_max)
    elif retry_later:
        p.schedule_poll(now, config.poll_base, config.poll_max)
    else:
        p.next_poll_at = now  # more to do at once (e.g. a void after authorization)


def _transition_audit(p: Payment, before: PaymentState, actor: str) -> AuditEntry:
    return AuditEntry(
        action="transition",
        actor=actor,
        # A StrEnum formats and str()s as its value: no `value` property per field (issue 13).
        reason=f"{before} -> {p.state}",
        details={
            "from": str(before),
            "to": str(p.state),
            "pending_op": str(p.pending_op) if p.pending_op else "",
            "failure_reason": p.failure_reason,
            "failure_code": p.failure_code,
        },
        payment_id=p.id,
    )


def _report_step(
    p: Payment, before: PaymentState, unknown: OutcomeUnknown | None, actor: str
) -> None:
    """Metrics and logs of a recorded step (after its commit)."""
    if before is PaymentState.UNKNOWN and p.state is not PaymentState.UNKNOWN:
        metrics.count(metrics.UNKNOWN_RESOLVED, str(p.state))
    if before is not p.state:
        log.info(
            "payment %s: %s -> %s",
            p.id,
            before,
            p.state,
            extra={"fields": {"payment_id": p.id, "actor": actor, "reason": p.failure_reason}},
        )
    elif unknown is not None:
        log.warning(
            "payment %s: provider outcome unknown (%s); next poll at %s",
            p.id,
            unknown.message,
            p.next_poll_at.isoformat() if p.next_poll_at else "-",
        )


async def drive(deps: Deps, payment: Payment, *, actor: str, direct: bool) -> Step:
    """Advance a payment until it needs nothing more now (at most a few rounds), e.g. an
    authorization that turned out voided is cancelled straight away. While it runs, a webhook
    about the payment waits for its outcome (in_flight) rather than re-fetch it alongside."""
    with deps.in_flight.working_on(payment.id):
        step = await advance_payment(deps, payment, actor=actor, direct=direct)
        for _ in range(3):
            p = step.payment
            if step.unknown or step.refused or not p.needs_provider_work():
                break
            step = await advance_payment(deps, p, actor=actor, direct=True)
    return step
