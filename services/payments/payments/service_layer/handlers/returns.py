"""A customer back from a provider's page (Razorpay's signed callback, Fatora's redirect, PayPal's
approval): verify the parameters the provider's way, then settle from the provider's own view."""

from __future__ import annotations

from dataclasses import dataclass

from payments.domain import commands, errors
from payments.domain.model import Payment
from payments.domain.provider import (
    Declined,
    InvalidRequest,
    OutcomeUnknown,
    PaymentProvider,
    ProviderCheckout,
    ProviderPayment,
    SignatureInvalid,
)
from payments.domain.transactions import Transaction, TxnStatus
from payments.service_layer import metrics
from payments.service_layer.deps import Deps
from payments.service_layer.handlers.checkouts import apply_to_transaction
from payments.service_layer.handlers.engine import drive
from payments.service_layer.handlers.provider_calls import CallRecord, call


@dataclass(frozen=True, slots=True)
class ReturnResult:
    transaction: Transaction | None
    payment: Payment | None
    redirect_url: str


async def confirm_return(cmd: commands.ConfirmReturn, deps: Deps) -> ReturnResult:
    """Verify a return (INVALID_SIGNATURE, nothing changed, when it does not verify), then apply
    the provider's current view of the checkout it names: a forged return can change nothing."""
    provider = deps.providers.get(cmd.provider)
    try:
        back = await provider.verify_return(cmd.params)
    except SignatureInvalid as exc:
        metrics.WEBHOOK_EVENTS.labels("checkout.return", "invalid_signature").inc()
        raise errors.InvalidSignature(f"return refused: {exc.message}") from None
    async with deps.uow as uow:
        payment = await uow.payments.find_by_provider(checkout_id=back.checkout_id)
        txn = None
        if payment is None:
            txn = await uow.transactions.find_by_provider(checkout_id=back.checkout_id)
    made_with = payment.provider if payment else txn.provider if txn else ""
    if made_with != provider.name:
        raise errors.TransactionNotFound(back.checkout_id)
    if payment is not None:
        step = await drive(deps, payment, actor="customer", direct=False)
        p = step.payment
        return ReturnResult(None, p, p.return_url if p.state.value != "FAILED" else p.cancel_url)
    assert txn is not None
    t = await refresh_transaction(deps, provider, txn, actor="customer")
    ok = t.status in (TxnStatus.SUCCESS, TxnStatus.PENDING)
    return ReturnResult(t, None, t.return_url if ok else t.cancel_url)


async def refresh_transaction(
    deps: Deps, provider: PaymentProvider, txn: Transaction, *, actor: str
) -> Transaction:
    """Apply the provider's current view of a transaction's checkout (and its payment)."""
    records: list[CallRecord] = []
    cs = txn.provider_transaction_id
    session: ProviderCheckout | None = None
    intent: ProviderPayment | None = None
    try:
        session = await call(
            records, "retrieve_checkout", "", lambda: provider.retrieve_checkout(cs)
        )
        pi = session.payment_id
        if pi:
            intent = await call(
                records, "retrieve_payment", "", lambda: provider.retrieve_payment(pi)
            )
    except (OutcomeUnknown, InvalidRequest, Declined) as exc:
        meta = {"transaction_id": txn.id, "retry": "true"}
        async with deps.uow as uow:
            for record in records:
                await uow.audit.add(record.audit(actor, transaction_id=txn.id))
            await uow.commit()
        if isinstance(exc, OutcomeUnknown) and exc.timeout:
            raise errors.PaymentTimeout("the provider did not answer", metadata=meta) from None
        raise errors.ProviderUnavailable(
            f"could not read the checkout from the provider: {exc.message}", metadata=meta
        ) from None
    async with deps.uow as uow:
        for record in records:
            await uow.audit.add(record.audit(actor, transaction_id=txn.id))
        t = await apply_to_transaction(uow, deps, txn.id, session, intent, actor=actor)
        await uow.commit()
    return t


async def verify_transaction(transaction_id: str, deps: Deps) -> Transaction:
    """API-2: a transaction, refreshed from its provider while it is PENDING (so a payment whose
    webhook has not arrived yet is still reported in its final state); a provider that does not
    answer leaves the stored view."""
    async with deps.uow as uow:
        txn = await uow.transactions.get(transaction_id)
    if txn is None:
        raise errors.TransactionNotFound(transaction_id)
    if txn.status is not TxnStatus.PENDING or not txn.provider_transaction_id:
        return txn
    try:
        provider = deps.providers.of_existing(txn.provider)
        return await refresh_transaction(deps, provider, txn, actor="verify")
    except (OutcomeUnknown, errors.PaymentTimeout, errors.ProviderUnavailable):
        return txn
