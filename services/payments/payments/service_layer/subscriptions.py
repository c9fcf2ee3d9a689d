"""Subscription use cases of the shared Payment API (API-1, API-2, API-6): plans, Subscribe through
a hosted checkout, verification, cancellation, and settling a transaction from the provider's view.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import timedelta

from hirepay_platform import money
from hirepay_platform.ids import new_id
from payments.domain import commands, errors
from payments.domain.model import (
    AuditEntry,
    EventType,
    Payment,
    Transaction,
    TxnStatus,
    UserType,
)
from payments.domain.plans import Plan, find_plan
from payments.domain.provider import (
    CheckoutRequest,
    CheckoutStatus,
    InvalidRequest,
    OutcomeUnknown,
    ProviderCheckout,
    ProviderIntent,
)
from payments.service_layer import metrics
from payments.service_layer.handlers import Deps, drive, fingerprint, first_mismatch, publish
from payments.service_layer.provider_calls import CallRecord, call
from payments.service_layer.unit_of_work import PaymentsUnitOfWork

log = logging.getLogger(__name__)

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
SUPPORTED_METHODS = frozenset({"STRIPE"})


def list_plans(deps: Deps, user_type: UserType | None = None) -> list[Plan]:
    return [p for p in deps.policy.plans if user_type is None or p.user_type is user_type]


def _validate(cmd: commands.Subscribe) -> UserType:
    if cmd.user_type is None:
        raise errors.invalid("user_type", "must be COMPANY or APPLICANT")
    if not cmd.request_id:
        raise errors.invalid("request_id", "is required")
    if not cmd.user_id:
        raise errors.invalid("user_id", "is required")
    if not _EMAIL.fullmatch(cmd.email or "") or len(cmd.email) > 320:
        raise errors.invalid("email", "is not a valid email address")
    method = (cmd.payment_method or "STRIPE").upper()
    if method not in SUPPORTED_METHODS:
        raise errors.invalid("payment_method", "is not supported (only STRIPE)")
    for name, url in (("return_url", cmd.return_url), ("cancel_url", cmd.cancel_url)):
        if not url.startswith(("http://", "https://")):
            raise errors.invalid(name, "must be an http(s) URL")
    if cmd.currency:
        money.validate_unit(cmd.currency, cash_only=True)
    return cmd.user_type


async def subscribe(cmd: commands.Subscribe, deps: Deps, *, actor: str = "") -> Transaction:
    """Start a purchase: a PENDING transaction and a hosted checkout session; refused while the
    user has an active subscription. A repeat (same request_id) returns the same transaction."""
    user_type = _validate(cmd)
    plan = find_plan(deps.policy.plans, cmd.plan, user_type)
    amount, currency = plan.price(cmd.currency)
    print_ = fingerprint({"plan": plan.code, "currency": currency, "email": cmd.email})
    async with deps.uow as uow:
        now = uow.clock()
        await uow.transactions.lock_user(user_type, cmd.user_id)
        txn = await uow.transactions.get_by_request(user_type, cmd.user_id, cmd.request_id)
        if txn is not None:
            mismatch = first_mismatch(txn.metadata.get("fingerprint", "{}"), print_)
            if mismatch:
                raise errors.IdempotencyMismatch(f"request {cmd.request_id}", mismatch)
            if txn.checkout_url or txn.status is not TxnStatus.PENDING:
                return txn
        else:
            active = await uow.transactions.latest_active(user_type, cmd.user_id, now.date())
            if active is not None and active.subscription_end is not None:
                raise errors.AlreadySubscribed(active.subscription_end.isoformat(), active.id)
            txn_id = new_id("txn")
            txn = Transaction(
                id=txn_id,
                status=TxnStatus.PENDING,
                user_type=user_type,
                user_id=cmd.user_id,
                email=cmd.email,
                amount_minor=amount,
                currency=currency,
                payment_method=(cmd.payment_method or "STRIPE").upper(),
                provider=deps.provider.name,
                plan=plan.code,
                period_days=plan.period_days,
                request_id=cmd.request_id,
                return_url=cmd.return_url,
                cancel_url=cmd.cancel_url,
                created_at=now,
                updated_at=now,
                checkout_key=f"subscribe:{txn_id}",
                expires_at=now + timedelta(seconds=deps.policy.checkout_ttl_seconds),
                metadata={
                    "fingerprint": print_,
                    "subsystem": "job_manager" if user_type is UserType.COMPANY else "applicant",
                },
            )
            await uow.transactions.add(txn)
            await uow.audit.add(
                AuditEntry(
                    action="attempt",
                    actor=actor or cmd.user_id,
                    reason="subscription checkout requested",
                    details={
                        "plan": plan.code,
                        "amount_minor": str(amount),
                        "currency": currency,
                        "idempotency_key": txn.checkout_key,
                    },
                    transaction_id=txn.id,
                )
            )
            await uow.commit()
    records: list[CallRecord] = []
    failure: Exception | None = None
    session: ProviderCheckout | None = None
    customer_id = txn.provider_customer_id
    customer_key = f"customer:{txn.id}"
    try:
        if not customer_id:
            # API-4 keeps the provider's customer id; one customer record per purchase attempt.
            customer_id = await call(
                records,
                "create_customer",
                customer_key,
                lambda: deps.provider.create_customer(txn.email, customer_key),
            )
    except (OutcomeUnknown, InvalidRequest) as exc:
        failure = exc
    request = CheckoutRequest(
        amount_minor=txn.amount_minor,
        currency=txn.currency,
        product_name=f"{plan.name}",
        success_url=txn.return_url,
        cancel_url=deps.policy.cancel_url(txn.id),
        metadata={
            "type": "subscription",
            "transaction_id": txn.id,
            "user_id": txn.user_id,
            "user_type": txn.user_type.value,
            "plan": txn.plan,
        },
        client_reference_id=txn.id,
        manual_capture=False,
        expires_at=txn.expires_at,
        email=txn.email,
        customer_id=customer_id,
    )
    try:
        if failure is None:
            session = await call(
                records,
                "create_checkout",
                txn.checkout_key,
                lambda: deps.provider.create_checkout(request, txn.checkout_key),
            )
    except (OutcomeUnknown, InvalidRequest) as exc:
        failure = exc
    async with deps.uow as uow:
        now = uow.clock()
        stored = await uow.transactions.get(txn.id, for_update=True)
        assert stored is not None
        if customer_id and not stored.provider_customer_id:
            stored.provider_customer_id = customer_id
            stored.updated_at = now
            await uow.transactions.save(stored)
        if session is not None:
            stored.provider_transaction_id = session.id
            stored.checkout_url = session.url
            if session.expires_at is not None:
                stored.expires_at = session.expires_at
            stored.updated_at = now
            await uow.transactions.save(stored)
        for record in records:
            await uow.audit.add(record.audit(actor or txn.user_id, transaction_id=txn.id))
        await uow.commit()
    if isinstance(failure, OutcomeUnknown):
        meta = {"transaction_id": txn.id, "retry": "true"}
        if failure.timeout:
            raise errors.PaymentTimeout(
                "the payment provider did not respond in time", metadata=meta
            )
        raise errors.ProviderUnavailable("the payment provider is unavailable", metadata=meta)
    if isinstance(failure, InvalidRequest):
        raise errors.ValidationError(f"the provider refused the checkout: {failure.message}")
    return stored


async def get_transaction(transaction_id: str, deps: Deps) -> Transaction:
    async with deps.uow as uow:
        txn = await uow.transactions.get(transaction_id)
    if txn is None:
        raise errors.TransactionNotFound(transaction_id)
    return txn


@dataclass(frozen=True, slots=True)
class CancelResult:
    transaction: Transaction | None
    payment: Payment | None
    redirect_url: str


async def apply_to_transaction(
    uow: PaymentsUnitOfWork,
    deps: Deps,
    txn_id: str,
    session: ProviderCheckout | None,
    intent: ProviderIntent | None,
    *,
    actor: str,
    cancel: bool = False,
) -> Transaction:
    """Apply the provider's current view to a transaction (in the caller's transaction)."""
    now = uow.clock()
    txn = await uow.transactions.get(txn_id, for_update=True)
    if txn is None:
        raise errors.TransactionNotFound(txn_id)
    before = txn.status
    events: list[EventType] = []
    if session is not None:
        starts_after = None
        if txn.status is not TxnStatus.SUCCESS:
            active = await uow.transactions.latest_active(txn.user_type, txn.user_id, now.date())
            if active is not None and active.id != txn.id:
                starts_after = active.subscription_end
        events += txn.apply_checkout(session, intent, now.date(), starts_after, now)
    if cancel:
        events += txn.cancel(now)
    await uow.transactions.save(txn)
    if before is not txn.status:
        metrics.SUBSCRIPTIONS.labels(txn.user_type.value, txn.status.value).inc()
        await uow.audit.add(
            AuditEntry(
                action="transition",
                actor=actor,
                reason=f"{before.value} -> {txn.status.value}",
                details={
                    "from": before.value,
                    "to": txn.status.value,
                    "failure_code": txn.failure_code,
                    "subscription_end_date": (
                        txn.subscription_end.isoformat() if txn.subscription_end else ""
                    ),
                },
                transaction_id=txn.id,
            )
        )
    await publish(uow, deps.policy, events, now, txn=txn)
    return txn


async def cancel_checkout(cmd: commands.CancelCheckout, deps: Deps) -> CancelResult:
    """The customer cancelled on the hosted page: expire the session at the provider, then settle
    as cancelled (unless the provider says it was paid after all)."""
    if cmd.payment_id:
        return await _cancel_payment_checkout(cmd.payment_id, deps)
    txn = await get_transaction(cmd.transaction_id, deps)
    if txn.status is not TxnStatus.PENDING and txn.status is not TxnStatus.FAILED:
        return CancelResult(txn, None, txn.cancel_url)
    records: list[CallRecord] = []
    session: ProviderCheckout | None = None
    intent: ProviderIntent | None = None
    provider = deps.provider
    key = f"{txn.id}:expire"
    if txn.provider_transaction_id:
        cs = txn.provider_transaction_id
        try:
            try:
                session = await call(
                    records, "expire_checkout", key, lambda: provider.expire_checkout(cs, key)
                )
            except InvalidRequest:  # already complete or expired: read what it is
                session = await call(
                    records, "retrieve_checkout", "", lambda: provider.retrieve_checkout(cs)
                )
            if session.payment_intent_id and session.status is CheckoutStatus.COMPLETE:
                pi = session.payment_intent_id
                intent = await call(
                    records, "retrieve_payment", "", lambda: provider.retrieve_payment(pi)
                )
        except OutcomeUnknown as exc:
            async with deps.uow as uow:
                for record in records:
                    await uow.audit.add(record.audit(txn.user_id, transaction_id=txn.id))
                await uow.commit()
            meta = {"transaction_id": txn.id, "retry": "true"}
            if exc.timeout:
                raise errors.PaymentTimeout("the provider did not answer", metadata=meta) from None
            raise errors.ProviderUnavailable("the provider is unavailable", metadata=meta) from None
    async with deps.uow as uow:
        for record in records:
            await uow.audit.add(record.audit(txn.user_id, transaction_id=txn.id))
        paid = session is not None and session.payment_status == "paid"
        txn = await apply_to_transaction(
            uow, deps, txn.id, session, intent, actor=txn.user_id, cancel=not paid
        )
        await uow.commit()
    return CancelResult(txn, None, txn.cancel_url)


async def _cancel_payment_checkout(payment_id: str, deps: Deps) -> CancelResult:
    """A job-posting checkout cancelled by the customer: void the payment (expire the session)."""
    async with deps.uow as uow:
        now = uow.clock()
        payment = await uow.payments.get(payment_id, for_update=True)
        if payment is None:
            raise errors.PaymentNotFound(payment_id)
        must_call = False
        if not payment.void_requested:
            must_call = payment.request_void("checkout cancelled by the customer", now)
            payment.lease(now, deps.policy.lease_seconds)
            await uow.payments.save(payment)
            await uow.audit.add(
                AuditEntry(
                    action="attempt",
                    actor=payment.owner_id,
                    reason="checkout cancelled by the customer",
                    details={"idempotency_key": payment.void_key},
                    payment_id=payment.id,
                )
            )
        await uow.commit()
    if must_call:
        payment = (await drive(deps, payment, actor=payment.owner_id, direct=False)).payment
    return CancelResult(None, payment, payment.cancel_url)


async def sync_stale_transactions(deps: Deps, *, limit: int = 20) -> int:
    """Settle PENDING transactions whose checkout expired without a webhook reaching us."""
    async with deps.uow as uow:
        stale = await uow.transactions.list_stale_pending(uow.clock(), limit)
    for txn in stale:
        if not txn.provider_transaction_id:
            async with deps.uow as uow:
                await apply_to_transaction(
                    uow, deps, txn.id, None, None, actor="poller", cancel=True
                )
                await uow.commit()
            continue
        records: list[CallRecord] = []
        cs = txn.provider_transaction_id
        try:
            session = await call(
                records, "retrieve_checkout", "", lambda cs=cs: deps.provider.retrieve_checkout(cs)
            )
            intent = None
            if session.payment_intent_id:
                pi = session.payment_intent_id
                intent = await call(
                    records,
                    "retrieve_payment",
                    "",
                    lambda pi=pi: deps.provider.retrieve_payment(pi),
                )
        except (OutcomeUnknown, InvalidRequest):
            log.warning("could not refresh transaction %s", txn.id)
            continue
        async with deps.uow as uow:
            if session.status is not CheckoutStatus.OPEN:
                await apply_to_transaction(uow, deps, txn.id, session, intent, actor="poller")
            else:
                fresh = await uow.transactions.get(txn.id, for_update=True)
                if fresh is not None:
                    fresh.updated_at = uow.clock()  # look again in a minute
                    await uow.transactions.save(fresh)
            for record in records:
                await uow.audit.add(record.audit("poller", transaction_id=txn.id))
            await uow.commit()
    return len(stale)
