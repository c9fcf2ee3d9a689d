"""Payment use cases: the payment side of the two-phase handshake, refunds and the UNKNOWN poller.

Every provider call follows the same three steps: record the intent (the payment row, its stored
idempotency key and a lease) in one local transaction, call the provider outside any transaction,
record the outcome in a second one. A crash in between leaves a leased row whose lease expires; the
poller then replays the same call with the same idempotency key, so the provider either returns the
original result or performs the operation once.

The TCC guard is the barrier table, written insert-first in the same transaction as the payment.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from hirepay_platform import money
from hirepay_platform.errors import Conflict, HirepayError, ValidationError
from hirepay_platform.ids import new_id
from payments.domain import commands, errors
from payments.domain.model import (
    TAKEN,
    AuditEntry,
    EventType,
    Method,
    OutboxEvent,
    Payment,
    PaymentState,
    PendingOp,
    Refund,
    RefundStatus,
    TccBranch,
    TccOp,
    Transaction,
    decline_error,
    validate_metadata,
)
from payments.domain.plans import Plan
from payments.domain.provider import (
    AuthorizeIntent,
    CardDeclined,
    CheckoutRequest,
    CheckoutStatus,
    IntentStatus,
    InvalidRequest,
    OutcomeUnknown,
    PaymentProvider,
    ProviderCheckout,
    ProviderErrorInfo,
    ProviderIntent,
)
from payments.service_layer import metrics
from payments.service_layer.provider_calls import CallRecord, call
from payments.service_layer.unit_of_work import PaymentsUnitOfWork

log = logging.getLogger(__name__)

CANCELLABLE = frozenset(
    {
        IntentStatus.REQUIRES_CAPTURE,
        IntentStatus.REQUIRES_ACTION,
        IntentStatus.REQUIRES_CONFIRMATION,
        IntentStatus.REQUIRES_PAYMENT_METHOD,
    }
)
STRIPE_REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})
VOID_REFUND_REQUEST = "void"  # request id of the automatic refund of money settled after a Void


@dataclass(frozen=True, slots=True)
class Policy:
    """The service's configuration as the use cases need it."""

    provider_timeout: float = 8.0
    poll_base: float = 1.0
    poll_max: float = 60.0
    poll_batch: int = 20
    checkout_cancel_url: str = "http://127.0.0.1:8080/api/payments/checkout/cancel?ref={ref}"
    checkout_ttl_seconds: int = 3600
    plans: tuple[Plan, ...] = ()
    callback_subsystems: frozenset[str] = frozenset()

    @property
    def lease_seconds(self) -> float:
        """How long one in-flight provider step keeps other workers off a payment."""
        return self.provider_timeout * 2 + 5

    def cancel_url(self, ref: str) -> str:
        return self.checkout_cancel_url.replace("{ref}", ref)


@dataclass
class Deps:
    """What the use cases work with: a unit of work (entered once per local transaction),
    the provider and the policy."""

    uow: PaymentsUnitOfWork
    provider: PaymentProvider
    policy: Policy = field(default_factory=Policy)


@dataclass(frozen=True, slots=True)
class PaymentResult:
    payment: Payment | None
    replayed: bool = False
    null_compensation: bool = False


@dataclass(frozen=True, slots=True)
class RefundResult:
    refund: Refund
    payment: Payment
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    """What one round of provider work did."""

    payment: Payment
    declined: CardDeclined | None = None
    refused: InvalidRequest | None = None
    unknown: OutcomeUnknown | None = None


# --- shared steps -----------------------------------------------------------------------------


def fingerprint(fields: dict[str, object]) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def first_mismatch(stored: str, given: str) -> str | None:
    try:
        a, b = json.loads(stored or "{}"), json.loads(given)
    except ValueError:
        return "request"
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            return key
    return None


async def publish(
    uow: PaymentsUnitOfWork,
    policy: Policy,
    events: list[EventType],
    now: datetime,
    *,
    payment: Payment | None = None,
    txn: Transaction | None = None,
) -> None:
    """Write settlement events to the outbox, in the caller's transaction (call it last)."""
    subsystem = (payment.subsystem if payment else "") or (txn.subsystem if txn else "")
    for event_type in events:
        await uow.outbox.add(
            OutboxEvent(
                event_id=new_id("evt"),
                type=event_type,
                occurred_at=now,
                subsystem=subsystem,
                payment=payment,
                transaction=txn,
            ),
            callback=subsystem in policy.callback_subsystems,
        )
        if event_type is EventType.PAYMENT_CAPTURED and payment is not None:
            metrics.REVENUE.labels(payment.currency).inc(payment.captured_minor)


def outcome_error(payment: Payment) -> HirepayError | None:
    """The error a caller of Authorize gets for the payment's recorded outcome, if any."""
    meta = {"payment_id": payment.id}
    if payment.state is PaymentState.UNKNOWN:
        if not payment.failure_reason:  # the first call has not come back yet
            return errors.OperationInProgress(payment.id, "authorize")
        if payment.failure_reason == "PAYMENT_PROVIDER_UNAVAILABLE":
            return errors.ProviderUnavailable(
                "the payment provider is unavailable; the payment is being resolved",
                metadata={**meta, "retry": "true"},
            )
        return errors.PaymentTimeout(
            "the payment provider did not respond in time; the payment is being resolved",
            metadata={**meta, "retry": "true"},
        )
    if payment.state is PaymentState.VOIDED and payment.void_requested:
        return errors.PaymentVoided(
            payment.branch.global_tx_id, payment.branch.branch_id, payment.id
        )
    if payment.state is not PaymentState.FAILED:
        return None
    info = ProviderErrorInfo(payment.failure_code, payment.decline_code, payment.failure_message)
    if payment.failure_reason in ("PAYMENT_DECLINED", "INSUFFICIENT_FUNDS"):
        return decline_error(info, payment.id)
    if payment.failure_reason == "INVALID_PAYMENT_DETAILS":
        return errors.InvalidPaymentDetails(
            payment.failure_message or "the payment method is invalid",
            metadata={**meta, "code": payment.failure_code, "field": "payment_method_token"},
        )
    if payment.failure_reason == "VALIDATION_FAILED":
        return ValidationError(payment.failure_message or "the provider refused the request")
    return errors.PaymentDeclined(
        payment.failure_message or "the payment failed",
        metadata={**meta, "code": payment.failure_code, "decline_code": payment.decline_code},
    )


def _authorize_request(p: Payment) -> AuthorizeIntent:
    return AuthorizeIntent(
        amount_minor=p.amount_minor,
        currency=p.currency,
        payment_method=p.payment_method_token,
        manual_capture=p.method is Method.CARD,
        description=p.description,
        metadata=p.provider_metadata,
        return_url=p.return_url,
        email=p.email,
    )


def _checkout_request(p: Payment, policy: Policy) -> CheckoutRequest:
    return CheckoutRequest(
        amount_minor=p.amount_minor,
        currency=p.currency,
        product_name=p.description or "Hirepay payment",
        success_url=p.return_url,
        cancel_url=policy.cancel_url(p.id),
        metadata=p.provider_metadata,
        client_reference_id=p.id,
        manual_capture=True,
        email=p.email,
    )


async def refund_if_voided(uow: PaymentsUnitOfWork, p: Payment, now: datetime, actor: str) -> None:
    """A Void was accepted but the money settled anyway (a bank transfer cannot be cancelled
    while processing): schedule a full refund, in the caller's transaction, for the poller."""
    if not (p.void_requested and p.state is PaymentState.CAPTURED and p.refundable_minor > 0):
        return
    if await uow.refunds.get_by_request(p.id, VOID_REFUND_REQUEST) is not None:
        return
    amount = p.reserve_refund(0, now)
    ref = Refund(
        id=new_id("rfd"),
        payment_id=p.id,
        request_id=VOID_REFUND_REQUEST,
        amount_minor=amount,
        requested_minor=0,
        currency=p.currency,
        reason="voided_after_settlement",
        status=RefundStatus.PENDING,
        idempotency_key=f"refund:{p.id}:{VOID_REFUND_REQUEST}",
        created_at=now,
        updated_at=now,
        next_poll_at=now,
    )
    await uow.refunds.add(ref)
    await uow.audit.add(
        AuditEntry(
            action="attempt",
            actor=actor,
            reason="refund of money settled after its void",
            details={
                "refund_id": ref.id,
                "amount_minor": str(amount),
                "idempotency_key": ref.idempotency_key,
            },
            payment_id=p.id,
        )
    )


# --- the engine: one round of provider work for a payment ------------------------------------


async def advance_payment(deps: Deps, payment: Payment, *, actor: str, direct: bool) -> Step:
    """Do what the payment still needs from the provider, then record the outcome.

    `direct`: the caller just asked for the pending operation, so call it straight away; otherwise
    (polling) first learn the provider's current state, then do what is left. The create of an
    authorization is always replayed with its stored key: it returns the original answer if the
    first call went through, or performs it now.
    """
    provider, p = deps.provider, payment
    records: list[CallRecord] = []
    intent: ProviderIntent | None = None
    checkout: ProviderCheckout | None = None
    declined = refused = unknown = None
    try:
        try:
            if p.pending_op is PendingOp.AUTHORIZE and not (
                p.provider_payment_id or p.provider_checkout_id
            ):
                if p.method is Method.CHECKOUT:
                    request = _checkout_request(p, deps.policy)
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
                intent, checkout = await _retrieve(records, provider, p)
    except CardDeclined as exc:
        declined = exc
    except InvalidRequest as exc:
        refused = refused or exc
    except OutcomeUnknown as exc:
        unknown = exc
    return await _record_step(
        deps, p.id, actor, records, intent, checkout, declined, refused, unknown
    )


async def _retrieve(
    records: list[CallRecord], provider: PaymentProvider, p: Payment
) -> tuple[ProviderIntent | None, ProviderCheckout | None]:
    intent = checkout = None
    if p.provider_checkout_id and (not p.provider_payment_id or p.void_requested):
        checkout = await call(
            records,
            "retrieve_checkout",
            "",
            lambda: provider.retrieve_checkout(p.provider_checkout_id),
        )
        pi = checkout.payment_intent_id or p.provider_payment_id
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
    intent: ProviderIntent | None,
    checkout: ProviderCheckout | None,
) -> tuple[ProviderIntent | None, ProviderCheckout | None]:
    """Given the provider's current view, do what is still owed: a requested void or capture.

    A void of a hosted checkout first expires the session (so the page can no longer take money;
    Stripe cancels an open session's intent only that way), then cancels an authorization."""
    expire_key = f"{p.void_key}:expire"  # its own key: one idempotency key, one operation
    if p.void_requested:
        if intent is not None and intent.status in CANCELLABLE:
            iid = intent.id
            if checkout is not None and checkout.status is CheckoutStatus.OPEN:
                cid = checkout.id
                checkout = await call(
                    records,
                    "expire_checkout",
                    expire_key,
                    lambda: provider.expire_checkout(cid, expire_key),
                )
                intent = await call(
                    records, "retrieve_payment", "", lambda: provider.retrieve_payment(iid)
                )
            if intent.status in CANCELLABLE:
                intent = await call(
                    records, "cancel", p.void_key, lambda: provider.cancel(iid, p.void_key)
                )
        elif intent is None and checkout is not None and checkout.status is CheckoutStatus.OPEN:
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
        and intent.status is IntentStatus.REQUIRES_CAPTURE
    ):
        iid = intent.id
        intent = await call(
            records,
            "capture",
            p.capture_key,
            lambda: provider.capture(iid, p.capture_amount_minor, p.capture_key),
        )
    return intent, checkout


async def _record_step(
    deps: Deps,
    payment_id: str,
    actor: str,
    records: list[CallRecord],
    intent: ProviderIntent | None,
    checkout: ProviderCheckout | None,
    declined: CardDeclined | None,
    refused: InvalidRequest | None,
    unknown: OutcomeUnknown | None,
) -> Step:
    policy = deps.policy
    async with deps.uow as uow:
        now = uow.clock()
        p = await uow.payments.get(payment_id, for_update=True)
        if p is None:  # the row was committed before any provider call
            raise HirepayError(f"payment {payment_id} vanished", reason="INTERNAL")
        before, pending = p.state, p.pending_op
        events: list[EventType] = []
        if checkout is not None:
            events += p.apply_checkout(checkout, now)
        if intent is not None:
            events += p.apply_intent(intent, now)
        if declined is not None:
            if declined.intent_id and not p.provider_payment_id:
                p.provider_payment_id = declined.intent_id
            events += p.decline(declined.error, now)
        if refused is not None and intent is None and checkout is None:
            if p.pending_op is PendingOp.AUTHORIZE:
                reason = (
                    "INVALID_PAYMENT_DETAILS"
                    if refused.about_payment_method
                    else "VALIDATION_FAILED"
                )
                err = ProviderErrorInfo(refused.code, "", refused.message, refused.param)
                events += p.decline(err, now, reason)
            else:
                p.pending_op = None
        elif refused is not None and p.pending_op in (PendingOp.CAPTURE, PendingOp.VOID):
            # The provider's current state was applied; what it refused cannot be done.
            p.pending_op = None if not p.void_requested else p.pending_op
        if unknown is not None and (p.pending_op is not None or p.state is PaymentState.UNKNOWN):
            p.mark_unknown(timeout=unknown.timeout, message=unknown.message, now=now)
        if p.needs_provider_work():
            if unknown is not None or refused is not None:
                p.schedule_poll(now, policy.poll_base, policy.poll_max)
            else:
                p.next_poll_at = now  # more to do at once (e.g. a void after authorization)
        else:
            p.finish_step(now)
        await refund_if_voided(uow, p, now, actor)
        await uow.payments.save(p)
        for record in records:
            await uow.audit.add(record.audit(actor, payment_id=p.id))
        if before is not p.state or pending is not p.pending_op:
            await uow.audit.add(
                AuditEntry(
                    action="transition",
                    actor=actor,
                    reason=f"{before.value} -> {p.state.value}",
                    details={
                        "from": before.value,
                        "to": p.state.value,
                        "pending_op": p.pending_op.value if p.pending_op else "",
                        "failure_reason": p.failure_reason,
                        "failure_code": p.failure_code,
                    },
                    payment_id=p.id,
                )
            )
        await publish(uow, policy, events, now, payment=p)
        await uow.commit()
    if before is PaymentState.UNKNOWN and p.state is not PaymentState.UNKNOWN:
        metrics.UNKNOWN_RESOLVED.labels(p.state.value).inc()
    if before is not p.state:
        log.info(
            "payment %s: %s -> %s",
            p.id,
            before.value,
            p.state.value,
            extra={"fields": {"payment_id": p.id, "actor": actor, "reason": p.failure_reason}},
        )
    elif unknown is not None:
        log.warning(
            "payment %s: provider outcome unknown (%s); next poll at %s",
            p.id,
            unknown.message,
            p.next_poll_at.isoformat() if p.next_poll_at else "-",
        )
    return Step(p, declined, refused, unknown)


async def drive(deps: Deps, payment: Payment, *, actor: str, direct: bool) -> Step:
    """Advance a payment until it needs nothing more now (at most a few rounds), e.g. an
    authorization that turned out voided is cancelled straight away."""
    step = await advance_payment(deps, payment, actor=actor, direct=direct)
    for _ in range(3):
        p = step.payment
        if step.unknown or step.refused or not p.needs_provider_work():
            break
        step = await advance_payment(deps, p, actor=actor, direct=True)
    return step


# --- Try / Confirm / Cancel -------------------------------------------------------------------


def _method(cmd: commands.Authorize) -> Method:
    if cmd.method is None:
        raise errors.invalid("method", "is required (CARD, BANK_TRANSFER or CHECKOUT)")
    if cmd.method is not Method.CHECKOUT and not cmd.payment_method_token:
        raise errors.invalid("payment_method_token", "is required for CARD and BANK_TRANSFER")
    if cmd.payment_method_token and not cmd.payment_method_token.startswith("pm_"):
        # SAQ A: only provider tokens, never anything that could be a card number.
        raise errors.InvalidPaymentDetails(
            "payment_method_token must be a provider token (pm_...)",
            metadata={"field": "payment_method_token"},
        )
    if cmd.method is Method.CHECKOUT and not cmd.return_url:
        raise errors.invalid("return_url", "is required for CHECKOUT")
    return cmd.method


async def authorize(cmd: commands.Authorize, deps: Deps, *, actor: str = "saga") -> PaymentResult:
    """Try: reserve the amount with the provider (manual capture), once per branch.

    A repeat answers with the stored outcome; a Try after its branch's Cancel reserves nothing."""
    branch = cmd.branch.validated()
    method = _method(cmd)
    money.validate_amount(cmd.amount_minor, field="amount.amount_minor")
    currency = money.validate_unit(cmd.currency, field="amount.currency", cash_only=True)
    if not cmd.owner_id:
        raise errors.invalid("owner_id", "is required")
    metadata = validate_metadata(cmd.metadata)
    print_ = fingerprint(
        {
            "owner_id": cmd.owner_id,
            "amount": [cmd.amount_minor, currency],
            "method": method.value,
            "payment_method_token": cmd.payment_method_token,
        }
    )
    async with deps.uow as uow:
        now = uow.clock()
        if not await uow.barriers.insert(branch, TccOp.TRY, TccOp.TRY, print_):
            row = await uow.barriers.get(branch, TccOp.TRY)
            if row is None:
                raise Conflict(f"branch {branch} is being written; retry")
            origin, stored = row
            if origin is TccOp.CANCEL:
                raise errors.PaymentVoided(branch.global_tx_id, branch.branch_id)
            mismatch = first_mismatch(stored, print_)
            if mismatch:
                raise errors.IdempotencyMismatch(f"branch {branch}", mismatch)
            payment = await uow.payments.get_by_branch(branch)
            if payment is None:
                raise Conflict(f"branch {branch} is being written; retry")
            replay = True
        else:
            replay = False
            payment = Payment(
                id=new_id("pay"),
                branch=branch,
                owner_id=cmd.owner_id,
                amount_minor=cmd.amount_minor,
                currency=currency,
                method=method,
                provider=deps.provider.name,
                state=PaymentState.UNKNOWN,
                created_at=now,
                updated_at=now,
                fingerprint=print_,
                payment_method_token=cmd.payment_method_token,
                description=cmd.description[:500],
                email=cmd.email,
                return_url=cmd.return_url,
                cancel_url=cmd.cancel_url,
                metadata=metadata,
                authorize_key=branch.key("authorize"),
                pending_op=PendingOp.AUTHORIZE,
            )
            payment.lease(now, deps.policy.lease_seconds)
            await uow.payments.add(payment)
            await uow.audit.add(
                AuditEntry(
                    action="attempt",
                    actor=actor,
                    reason="authorize requested",
                    details={
                        "request_id": cmd.request_id,
                        "amount_minor": str(cmd.amount_minor),
                        "currency": currency,
                        "method": method.value,
                        "idempotency_key": payment.authorize_key,
                        "owner_id": cmd.owner_id,
                    },
                    payment_id=payment.id,
                )
            )
            await uow.commit()
    if replay:
        error = outcome_error(payment)
        if error is not None:
            raise error
        return PaymentResult(payment, replayed=True)
    step = await drive(deps, payment, actor=actor, direct=True)
    p = step.payment
    metrics.PAYMENT_ATTEMPTS.labels(
        method.value, p.state.value.lower(), p.failure_reason or "none"
    ).inc()
    error = outcome_error(p)
    if error is not None:
        raise error
    return PaymentResult(p)


async def capture(cmd: commands.Capture, deps: Deps, *, actor: str = "saga") -> PaymentResult:
    """Confirm: capture the authorization (all, or part), once per branch."""
    branch = cmd.branch.validated()
    if cmd.amount_minor < 0:
        raise errors.invalid("amount_minor", "must not be negative")
    print_ = fingerprint({"amount_minor": cmd.amount_minor})
    async with deps.uow as uow:
        now = uow.clock()
        if not await uow.barriers.insert(branch, TccOp.CONFIRM, TccOp.CONFIRM, print_):
            row = await uow.barriers.get(branch, TccOp.CONFIRM)
            payment = await uow.payments.get_by_branch(branch)
            if row is None or payment is None:
                raise Conflict(f"branch {branch} is being written; retry")
            mismatch = first_mismatch(row[1], print_)
            if mismatch:
                raise errors.IdempotencyMismatch(f"capture of {branch}", mismatch)
            return _capture_outcome(payment, replayed=True)
        payment = await uow.payments.get_by_branch(branch, for_update=True)
        if payment is None:
            try_row = await uow.barriers.get(branch, TccOp.TRY)
            if try_row is not None and try_row[0] is TccOp.CANCEL:
                raise errors.PaymentVoided(branch.global_tx_id, branch.branch_id)
            raise errors.PaymentNotFound(str(branch))
        if payment.state in TAKEN and not payment.void_requested:
            # An automatic payment (bank transfer) already settled: confirming it is a success.
            await uow.commit()
            return PaymentResult(payment)
        payment.request_capture(cmd.amount_minor, now)
        payment.lease(now, deps.policy.lease_seconds)
        await uow.payments.save(payment)
        await uow.audit.add(
            AuditEntry(
                action="attempt",
                actor=actor,
                reason="capture requested",
                details={
                    "request_id": cmd.request_id,
                    "amount_minor": str(payment.capture_amount_minor),
                    "idempotency_key": payment.capture_key,
                },
                payment_id=payment.id,
            )
        )
        await uow.commit()
    step = await drive(deps, payment, actor=actor, direct=True)
    if step.refused is not None and step.payment.state not in TAKEN:
        raise errors.PaymentNotCapturable(
            step.payment.id, step.payment.state.value, step.refused.message
        )
    return _capture_outcome(step.payment, replayed=False)


def _capture_outcome(payment: Payment, *, replayed: bool) -> PaymentResult:
    if payment.state in TAKEN:
        return PaymentResult(payment, replayed=replayed)
    if payment.pending_op is PendingOp.CAPTURE and payment.state is PaymentState.AUTHORIZED:
        raise errors.OperationInProgress(payment.id, "capture")
    if payment.state is PaymentState.UNKNOWN:
        raise outcome_error(payment) or errors.PaymentTimeout("capture outcome unknown")
    if payment.state is PaymentState.VOIDED:
        raise errors.PaymentVoided(
            payment.branch.global_tx_id, payment.branch.branch_id, payment.id
        )
    raise errors.PaymentNotCapturable(payment.id, payment.state.value)


async def void(cmd: commands.Void, deps: Deps, *, actor: str = "saga") -> PaymentResult:
    """Cancel: release the authorization. A Void before its Authorize is recorded and succeeds
    doing nothing (and makes a late Authorize refuse). A Void never fails because the provider is
    slow: it is recorded, and the poller completes it (then payment.voided is published)."""
    branch = cmd.branch.validated()
    async with deps.uow as uow:
        now = uow.clock()
        if await uow.barriers.insert(branch, TccOp.TRY, TccOp.CANCEL, ""):
            await uow.barriers.insert(branch, TccOp.CANCEL, TccOp.CANCEL, "")
            await uow.commit()
            return PaymentResult(None, null_compensation=True)
        if not await uow.barriers.insert(branch, TccOp.CANCEL, TccOp.CANCEL, ""):
            payment = await uow.payments.get_by_branch(branch)
            return PaymentResult(payment, replayed=True, null_compensation=payment is None)
        payment = await uow.payments.get_by_branch(branch, for_update=True)
        if payment is None:
            raise HirepayError(
                f"branch {branch} has a Try but no payment", reason="TCC_INCONSISTENT"
            )
        must_call = payment.request_void(cmd.reason[:500], now)
        in_flight = (
            payment.pending_op is PendingOp.AUTHORIZE
            and payment.next_poll_at is not None
            and payment.next_poll_at > now
        )
        if must_call and not in_flight:
            payment.lease(now, deps.policy.lease_seconds)
        await uow.payments.save(payment)
        await uow.audit.add(
            AuditEntry(
                action="attempt",
                actor=actor,
                reason=f"void requested: {cmd.reason[:200]}",
                details={"request_id": cmd.request_id, "idempotency_key": payment.void_key},
                payment_id=payment.id,
            )
        )
        await uow.commit()
    if must_call and not in_flight:
        payment = (await drive(deps, payment, actor=actor, direct=True)).payment
    return PaymentResult(payment)


async def get_payment(payment_id: str, deps: Deps) -> Payment:
    async with deps.uow as uow:
        payment = await uow.payments.get(payment_id)
    if payment is None:
        raise errors.PaymentNotFound(payment_id)
    return payment


async def get_payment_by_branch(branch: TccBranch, deps: Deps) -> PaymentResult:
    branch = branch.validated()
    async with deps.uow as uow:
        payment = await uow.payments.get_by_branch(branch)
        if payment is not None:
            return PaymentResult(payment)
        row = await uow.barriers.get(branch, TccOp.TRY)
    if row is not None and row[0] is TccOp.CANCEL:
        return PaymentResult(None, null_compensation=True)
    raise errors.PaymentNotFound(str(branch))


async def list_attempts(subject_id: str, deps: Deps) -> list[AuditEntry]:
    """The audit trail of a payment (pay_...) or of a subscription transaction (txn_...)."""
    async with deps.uow as uow:
        if subject_id.startswith("txn_"):
            if await uow.transactions.get(subject_id) is None:
                raise errors.TransactionNotFound(subject_id)
            return await uow.audit.list_for_transaction(subject_id)
        if await uow.payments.get(subject_id) is None:
            raise errors.PaymentNotFound(subject_id)
        return await uow.audit.list_for_payment(subject_id)


# --- refunds ----------------------------------------------------------------------------------


async def refund(cmd: commands.Refund, deps: Deps, *, actor: str = "saga") -> RefundResult:
    """Refund a captured payment. The amount is reserved on the payment row (locked) before the
    provider call, so concurrent refunds can never exceed the capture; a refusal releases it."""
    if not cmd.request_id:
        raise errors.invalid("request_id", "is required")
    if cmd.amount_minor < 0:
        raise errors.invalid("amount_minor", "must not be negative")
    reason = cmd.reason[:200] or "requested_by_customer"
    async with deps.uow as uow:
        now = uow.clock()
        payment = await uow.payments.get(cmd.payment_id, for_update=True)
        if payment is None:
            raise errors.PaymentNotFound(cmd.payment_id)
        existing = await uow.refunds.get_by_request(payment.id, cmd.request_id)
        if existing is not None:
            if existing.requested_minor != cmd.amount_minor:
                raise errors.IdempotencyMismatch(f"refund {cmd.request_id}", "amount_minor")
            return _refund_outcome(existing, payment, replayed=True)
        amount = payment.reserve_refund(cmd.amount_minor, now)
        ref = Refund(
            id=new_id("rfd"),
            payment_id=payment.id,
            request_id=cmd.request_id,
            amount_minor=amount,
            requested_minor=cmd.amount_minor,
            currency=payment.currency,
            reason=reason,
            status=RefundStatus.PENDING,
            idempotency_key=f"refund:{payment.id}:{cmd.request_id}",
            created_at=now,
            updated_at=now,
        )
        ref.next_poll_at = now + timedelta(seconds=deps.policy.lease_seconds)
        await uow.refunds.add(ref)
        await uow.payments.save(payment)
        await uow.audit.add(
            AuditEntry(
                action="attempt",
                actor=actor,
                reason=f"refund requested: {reason}",
                details={
                    "refund_id": ref.id,
                    "request_id": cmd.request_id,
                    "amount_minor": str(amount),
                    "idempotency_key": ref.idempotency_key,
                },
                payment_id=payment.id,
            )
        )
        await uow.commit()
    ref, payment = await advance_refund(deps, ref, payment.provider_payment_id, actor=actor)
    return _refund_outcome(ref, payment, replayed=False)


def _refund_outcome(ref: Refund, payment: Payment, *, replayed: bool) -> RefundResult:
    """A refund's answer: the refund, or the error its recorded outcome means."""
    if ref.status is RefundStatus.FAILED:
        if (
            "exceed" in ref.failure_message.lower()
            or "already been refunded" in ref.failure_message
        ):
            raise errors.RefundExceedsCaptured(
                payment.id, ref.amount_minor, payment.refundable_minor
            )
        raise errors.PaymentNotRefundable(payment.id, payment.state.value, ref.failure_message)
    if ref.status is RefundStatus.PENDING and ref.failure_message and not replayed:
        meta = {"payment_id": payment.id, "refund_id": ref.id, "retry": "true"}
        if ref.failure_message.startswith("unavailable"):
            raise errors.ProviderUnavailable(
                "refund outcome unknown; being resolved", metadata=meta
            )
        raise errors.PaymentTimeout("refund outcome unknown; being resolved", metadata=meta)
    return RefundResult(ref, payment, replayed=replayed)


async def advance_refund(
    deps: Deps, ref: Refund, intent_id: str, *, actor: str
) -> tuple[Refund, Payment]:
    """Send (or replay, with the same key) a refund to the provider and record what it says."""
    records: list[CallRecord] = []
    provider = deps.provider
    stripe_reason = ref.reason if ref.reason in STRIPE_REFUND_REASONS else ""
    outcome: str
    provider_refund = None
    message = ""
    try:
        provider_refund = await call(
            records,
            "refund",
            ref.idempotency_key,
            lambda: provider.refund(
                intent_id,
                ref.amount_minor,
                stripe_reason,
                {"hirepay_refund_id": ref.id, "reason": ref.reason},
                ref.idempotency_key,
            ),
        )
        outcome = "failed" if provider_refund.status in ("failed", "canceled") else "succeeded"
    except (InvalidRequest, CardDeclined) as exc:
        outcome, message = "failed", exc.message
    except OutcomeUnknown as exc:
        outcome = "unknown"
        message = ("timeout: " if exc.timeout else "unavailable: ") + exc.message
    async with deps.uow as uow:
        now = uow.clock()
        payment = await uow.payments.get(ref.payment_id, for_update=True)
        stored = await uow.refunds.get(ref.id, for_update=True)
        assert payment is not None and stored is not None
        events: list[EventType] = []
        if stored.status is RefundStatus.PENDING:
            if outcome == "succeeded" and provider_refund is not None:
                stored.status = RefundStatus.SUCCEEDED
                stored.provider_refund_id = provider_refund.id
                stored.next_poll_at = None
                stored.failure_message = ""
                await uow.refunds.save(stored)
                total = await uow.refunds.succeeded_total(payment.id)
                events = payment.settle_refund(total, now)
                payment.failure_reason = ""
                metrics.REFUNDS.labels(stored.reason, "succeeded").inc()
                metrics.REFUNDED.labels(payment.currency).inc(stored.amount_minor)
            elif outcome == "failed":
                stored.status = RefundStatus.FAILED
                stored.failure_message = message or "the provider refused the refund"
                stored.next_poll_at = None
                payment.release_refund(stored.amount_minor, now)
                metrics.REFUNDS.labels(stored.reason, "failed").inc()
            else:
                stored.failure_message = message
                delay = min(deps.policy.poll_max, deps.policy.poll_base * 2**stored.poll_attempts)
                stored.poll_attempts += 1
                stored.next_poll_at = now + timedelta(seconds=delay)
            stored.updated_at = now
            await uow.refunds.save(stored)
            await uow.payments.save(payment)
        for record in records:
            await uow.audit.add(record.audit(actor, payment_id=payment.id))
        await uow.audit.add(
            AuditEntry(
                action="refund",
                actor=actor,
                reason=f"refund {stored.id} {stored.status.value.lower()}",
                details={
                    "refund_id": stored.id,
                    "amount_minor": str(stored.amount_minor),
                    "status": stored.status.value,
                    "refunded_minor": str(payment.refunded_minor),
                },
                payment_id=payment.id,
            )
        )
        await publish(uow, deps.policy, events, now, payment=payment)
        await uow.commit()
    return stored, payment


# --- the poller -------------------------------------------------------------------------------


async def poll_due(deps: Deps, *, actor: str = "poller") -> int:
    """One round of the poller: resolve leased UNKNOWN/pending payments and pending refunds.

    Safe with several replicas: rows are leased with FOR UPDATE SKIP LOCKED."""
    policy = deps.policy
    async with deps.uow as uow:
        now = uow.clock()
        due = await uow.payments.lease_due(now, policy.poll_batch, policy.lease_seconds)
        refunds = await uow.refunds.lease_due(now, policy.poll_batch, policy.lease_seconds)
        await uow.commit()
    for payment in due:
        try:
            await drive(deps, payment, actor=actor, direct=False)
        except Exception:  # one bad payment must not stop the others
            log.exception("polling payment %s failed", payment.id)
    for ref in refunds:
        try:
            async with deps.uow as uow:
                payment = await uow.payments.get(ref.payment_id)
            if payment is not None:
                await advance_refund(deps, ref, payment.provider_payment_id, actor=actor)
        except Exception:
            log.exception("polling refund %s failed", ref.id)
    return len(due) + len(refunds)


# --- settlement events ------------------------------------------------------------------------


async def settlement_events_after(
    deps: Deps, cursor: int, *, limit: int = 200, subsystem: str = ""
) -> list[OutboxEvent]:
    """Committed settlement events after a cursor, oldest first."""
    if cursor < 0:
        raise errors.invalid("after_cursor", "must not be negative")
    async with deps.uow as uow:
        return await uow.outbox.list_after(cursor, limit, subsystem)
