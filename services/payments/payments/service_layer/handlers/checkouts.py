"""Hosted checkouts' outcomes: settling subscription transactions from the provider's view
(webhooks, the stale-checkout sweep) and CancelCheckout of a subscription or job-posting checkout."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from payments.domain import commands, errors
from payments.domain.events import AuditEntry, EventType
from payments.domain.model import Payment
from payments.domain.provider import (
    CheckoutState,
    InvalidRequest,
    OutcomeUnknown,
    ProviderCheckout,
    ProviderPayment,
)
from payments.domain.transactions import Transaction, TxnStatus
from payments.service_layer import metrics
from payments.service_layer.deps import Deps
from payments.service_layer.handlers.credits import record_settlement
from payments.service_layer.handlers.engine import drive
from payments.service_layer.handlers.provider_calls import CallRecord, call
from payments.service_layer.handlers.shared import publish
from payments.service_layer.handlers.subscriptions import get_transaction
from payments.service_layer.ports import PaymentsUnitOfWork

log = logging.getLogger(__name__)


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
    intent: ProviderPayment | None,
    *,
    actor: str,
    cancel: bool = False,
) -> Transaction:
    """Apply the provider's current view to a transaction (in the caller's transaction)."""
    now = deps.clock()
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
        # A paid purchase owes its booking on the ledger, recorded with its settlement (CR-2).
        await record_settlement(uow, txn, deps)
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
    await publish(uow, deps.config, events, now, txn=txn)
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
    intent: ProviderPayment | None = None
    provider = deps.providers.get(txn.provider)
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
            if session.payment_id and session.state is CheckoutState.COMPLETE:
                pi = session.payment_id
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
        paid = session is not None and session.paid
        txn = await apply_to_transaction(
            uow, deps, txn.id, session, intent, actor=txn.user_id, cancel=not paid
        )
        await uow.commit()
    return CancelResult(txn, None, txn.cancel_url)


async def _cancel_payment_checkout(payment_id: str, deps: Deps) -> CancelResult:
    """A job-posting checkout cancelled by the customer: void the payment (expire the session)."""
    async with deps.uow as uow:
        now = deps.clock()
        payment = await uow.payments.get(payment_id, for_update=True)
        if payment is None:
            raise errors.PaymentNotFound(payment_id)
        must_call = False
        if not payment.void_requested:
            must_call = payment.request_void("checkout cancelled by the customer", now)
            payment.lease(now, deps.config.lease_seconds)
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
        # One statement: its row locks (SKIP LOCKED: rows being settled now) end with it, as
        # they did with the read-only transaction (issue 13: no BEGIN / ROLLBACK round trips).
        await uow.autocommit()
        stale = await uow.transactions.list_stale_pending(deps.clock(), limit)
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
            provider = deps.providers.of_existing(txn.provider)
            session = await call(
                records,
                "retrieve_checkout",
                "",
                lambda cs=cs, pr=provider: pr.retrieve_checkout(cs),
            )
            intent = None
            if session.payment_id:
                pi = session.payment_id
                intent = await call(
                    records,
                    "retrieve_payment",
                    "",
                    lambda pi=pi, pr=provider: pr.retrieve_payment(pi),
                )
        except (OutcomeUnknown, InvalidRequest):
            log.warning("could not refresh transaction %s", txn.id)
            continue
        async with deps.uow as uow:
            if session.state is not CheckoutState.OPEN:
                await apply_to_transaction(uow, deps, txn.id, session, intent, actor="poller")
            else:
                fresh = await uow.transactions.get(txn.id, for_update=True)
                if fresh is not None:
                    fresh.updated_at = deps.clock()  # look again in a minute
                    await uow.transactions.save(fresh)
            for record in records:
                await uow.audit.add(record.audit("poller", transaction_id=txn.id))
            await uow.commit()
    return len(stale)
