"""Subscription use cases of the shared Payment API (API-1, API-2): plans, Subscribe through a
hosted checkout, and reading a transaction (settling it lives in handlers/checkouts.py)."""

from __future__ import annotations

import re
from datetime import timedelta

from hirepay_platform import money
from hirepay_platform.fingerprint import decode, encode, fingerprint, first_mismatch
from hirepay_platform.ids import new_id
from hirepay_platform.tcc import IdempotencyMismatch
from payments.domain import commands, errors
from payments.domain.events import AuditEntry
from payments.domain.plans import Plan, find_plan
from payments.domain.provider import (
    CheckoutRequest,
    InvalidRequest,
    OutcomeUnknown,
    ProviderCheckout,
)
from payments.domain.transactions import Transaction, TxnStatus, UserType
from payments.service_layer.deps import Deps
from payments.service_layer.handlers.credits import plan_metadata
from payments.service_layer.handlers.provider_calls import CallRecord, call

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# The payment methods of a transaction, each the provider of the same name: API-1 offers STRIPE,
# PAYPAL and RAZORPAY at the gateway; FATORA serves coin and job payments (seed 001) through the
# same transaction checkout.
SUPPORTED_METHODS = frozenset({"STRIPE", "PAYPAL", "RAZORPAY", "FATORA"})


def list_plans(deps: Deps, user_type: UserType | None = None) -> list[Plan]:
    return [p for p in deps.config.plans if user_type is None or p.user_type is user_type]


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
        raise errors.invalid("payment_method", "must be STRIPE, PAYPAL, RAZORPAY or FATORA")
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
    plan = find_plan(deps.config.plans, cmd.plan, user_type)
    if plan.free:
        raise errors.invalid("plan", "is free: there is nothing to buy")
    # A provider without credentials is not offered: PROVIDER_NOT_AVAILABLE, nothing created.
    deps.providers.get((cmd.payment_method or "STRIPE").lower())
    txn, done = await _find_or_start(cmd, deps, user_type, plan, actor)
    if done:
        return txn
    records: list[CallRecord] = []
    customer_id, session, failure = await _open_checkout(deps, txn, plan, records)
    stored = await _record_checkout(deps, txn, customer_id, session, records, actor)
    if failure is not None:
        _raise_checkout_failure(failure, txn.id)
    return stored


async def _find_or_start(
    cmd: commands.Subscribe, deps: Deps, user_type: UserType, plan: Plan, actor: str
) -> tuple[Transaction, bool]:
    """The request's transaction: the stored one (True if it needs nothing more), or a new
    PENDING one, committed before any provider call."""
    amount, currency = plan.price(cmd.currency)
    # Fields in name order: a reused request id is refused naming the first field that differs.
    print_ = fingerprint({"currency": currency, "email": cmd.email, "plan": plan.code})
    async with deps.uow as uow:
        now = deps.clock()
        await uow.transactions.lock_user(user_type, cmd.user_id)
        txn = await uow.transactions.get_by_request(user_type, cmd.user_id, cmd.request_id)
        if txn is not None:
            mismatch = first_mismatch(decode(txn.metadata.get("fingerprint", "")), print_)
            if mismatch:
                raise IdempotencyMismatch(f"request {cmd.request_id}", mismatch)
            if txn.checkout_url or txn.status is not TxnStatus.PENDING:
                return txn, True
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
                provider=(cmd.payment_method or "STRIPE").lower(),
                plan=plan.code,
                period_days=plan.period_days,
                request_id=cmd.request_id,
                return_url=cmd.return_url,
                cancel_url=cmd.cancel_url,
                created_at=now,
                updated_at=now,
                checkout_key=f"subscribe:{txn_id}",
                expires_at=now + timedelta(seconds=deps.config.checkout_ttl_seconds),
                metadata={
                    "fingerprint": encode(print_),
                    "subsystem": "job_manager" if user_type is UserType.COMPANY else "applicant",
                    **plan_metadata(plan),
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
    return txn, False


async def _open_checkout(
    deps: Deps, txn: Transaction, plan: Plan, records: list[CallRecord]
) -> tuple[str, ProviderCheckout | None, Exception | None]:
    """The provider's customer and hosted checkout session (each keyed, so a repeat reuses them);
    returns the customer id, the session and what went wrong, if anything."""
    failure: Exception | None = None
    session: ProviderCheckout | None = None
    customer_id = txn.provider_customer_id
    customer_key = f"customer:{txn.id}"
    provider = deps.providers.get(txn.provider)
    try:
        if not customer_id:
            # API-4 keeps the provider's customer id; one customer record per purchase attempt.
            customer_id = await call(
                records,
                "create_customer",
                customer_key,
                lambda: provider.create_customer(txn.email, customer_key),
            )
    except (OutcomeUnknown, InvalidRequest) as exc:
        failure = exc
    request = CheckoutRequest(
        amount_minor=txn.amount_minor,
        currency=txn.currency,
        product_name=f"{plan.name}",
        success_url=txn.return_url,
        cancel_url=deps.config.cancel_url(txn.id),
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
        confirm_url=deps.config.return_url(provider.name, txn.id),
    )
    try:
        if failure is None:
            session = await call(
                records,
                "create_checkout",
                txn.checkout_key,
                lambda: provider.create_checkout(request, txn.checkout_key),
            )
    except (OutcomeUnknown, InvalidRequest) as exc:
        failure = exc
    return customer_id, session, failure


async def _record_checkout(
    deps: Deps,
    txn: Transaction,
    customer_id: str,
    session: ProviderCheckout | None,
    records: list[CallRecord],
    actor: str,
) -> Transaction:
    """Store what the provider gave (customer, session) and the audit of its calls."""
    async with deps.uow as uow:
        now = deps.clock()
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
    return stored


def _raise_checkout_failure(failure: Exception, transaction_id: str) -> None:
    """The error a caller gets when the checkout could not be opened."""
    if isinstance(failure, OutcomeUnknown):
        meta = {"transaction_id": transaction_id, "retry": "true"}
        if failure.timeout:
            raise errors.PaymentTimeout(
                "the payment provider did not respond in time", metadata=meta
            )
        raise errors.ProviderUnavailable("the payment provider is unavailable", metadata=meta)
    if isinstance(failure, InvalidRequest):
        raise errors.ValidationError(f"the provider refused the checkout: {failure.message}")


async def get_transaction(transaction_id: str, deps: Deps) -> Transaction:
    async with deps.uow as uow:
        txn = await uow.transactions.get(transaction_id)
    if txn is None:
        raise errors.TransactionNotFound(transaction_id)
    return txn
