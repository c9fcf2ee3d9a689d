"""A plan purchase paid at PayPal or Razorpay, disputed there and lost (ESC-1 every cent, CR-2,
API-4, PAY-15), through the real payments process on PostgreSQL, the real wallet and both offline
sandboxes (their admin routes open and decide the dispute and send the real signed webhooks):
each delivery five times at once, the opening one again with the decision, records the dispute
once and books its money once (PayPal's hold and chargeback fee, Razorpay's deduction); the
purchase becomes REFUNDED with its credits revoked, GetTransaction shows the dispute; balances
asserted to the cent, credits to the unit, the ledger auditor clean."""

from __future__ import annotations

import asyncio

import httpx

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from tests.payments.grpc import test_provider_refunds_paypal_razorpay as refunds
from tests.payments.grpc.test_provider_disputes_paypal_razorpay import (
    DECIDED_EVENT,
    OPENED_EVENT,
    PAYPAL_FEE,
    _decide,
    _delivery,
    _open_dispute,
)
from tests.payments.grpc.test_provider_refunds_paypal_razorpay import (
    ProviderStack,
    _deliver_at_once,
    _id,
    _pay_on_the_page,
)
from tests.payments.ledger.test_ledger_bookings import Ledger, _findings
from tests.support.razorpay_support import pay_by_card
from tests.support.waiting import wait_for

# The refund tests' stack (PayPal and Razorpay sandboxes, payments, wallet) and fixtures.
provider_stack, jobs_stub, provider = refunds.provider_stack, refunds.jobs_stub, refunds.provider
Status = pb.PaymentDispute.Status
# SWIFT_HIRE (the default catalogue) per provider's currency: its price; 2,500 job credits and
# 50 candidate credits.
PRICES = {"paypal": ("USD", 4_900), "razorpay": ("INR", 399_900)}
JOBS, CANDIDATES = 2_500, 50


async def _transaction(stub: pb_grpc.PaymentsServiceStub, txn_id: str) -> pb.TransactionResponse:
    return await stub.GetTransaction(pb.GetTransactionRequest(transaction_id=txn_id))


async def _paid_purchase(
    stack: ProviderStack, stub: pb_grpc.PaymentsServiceStub, provider: str, company: str
) -> tuple[str, str]:
    """A SWIFT_HIRE purchase paid on the provider's page: its id and the provider's payment
    (PayPal: the order; Razorpay: the payment)."""
    currency, _ = PRICES[provider]
    txn = (
        await stub.Subscribe(
            pb.SubscribeRequest(
                request_id=_id("s"),
                user_type=pb.USER_TYPE_COMPANY,
                user_id=company,
                email="hr@acme.example",
                plan="SWIFT_HIRE",
                payment_method=provider.upper(),
                return_url="https://app.example/subscription/success",
                cancel_url="https://app.example/subscription/cancel",
                currency=currency,
            )
        )
    ).transaction
    base, url = stack.urls[provider], txn.checkout_url
    if provider == "paypal":
        await _pay_on_the_page(stack, stub, provider, url)
        paid_with = url.rsplit("token=", 1)[-1]  # the order
    else:  # paid as the page does, to learn the payment's id from Checkout's hand-back
        order = url.split("/checkout/", 1)[1].split("?", 1)[0]
        callback = httpx.URL(url).params["callback_url"]
        params = await asyncio.to_thread(pay_by_card, base, order, callback_url=callback)
        paid_with = params["razorpay_payment_id"]
        await stub.ConfirmCheckoutReturn(
            pb.ConfirmCheckoutReturnRequest(provider=provider, params=params)
        )

    async def paid() -> bool:
        got = await _transaction(stub, txn.transaction_id)
        return got.transaction.status == pb.Transaction.SUCCESS

    await wait_for(paid, timeout=20)
    return txn.transaction_id, paid_with


async def test_a_purchase_dispute_lost_at_the_provider_refunds_it_once_whatever_the_deliveries(
    provider_stack: ProviderStack, jobs_stub: pb_grpc.PaymentsServiceStub, provider: str
) -> None:
    currency, price = PRICES[provider]
    clearing, fees, company = f"provider:{provider}", f"provider:{provider}:fees", _id("company")
    ledger = Ledger(provider_stack, clearing, "platform", fees, company)
    txn_id, paid_with = await _paid_purchase(provider_stack, jobs_stub, provider, company)
    issued = {("ISSUANCE", "JOB_CREDIT"): -JOBS, ("ISSUANCE", "CANDIDATE_CREDIT"): -CANDIDATES}
    credits = {("USER", "JOB_CREDIT"): JOBS, ("USER", "CANDIDATE_CREDIT"): CANDIDATES}
    await ledger.settles_at(
        {
            clearing: {("PROVIDER_CLEARING", currency): -price},
            "platform": {("PLATFORM_REVENUE", currency): price, **issued},
            company: credits,
        }
    )

    dispute_id = _open_dispute(provider_stack, provider, pb.Payment(provider_payment_id=paid_with))
    opened = await _delivery(provider_stack, dispute_id, OPENED_EVENT[provider])
    replies = await _deliver_at_once(jobs_stub, provider, opened, 5)
    assert sum(not r.duplicate for r in replies) == 1
    [shown] = (await _transaction(jobs_stub, txn_id)).disputes
    assert (shown.dispute_id, shown.status, shown.amount.amount_minor) == (
        dispute_id,
        Status.NEEDS_RESPONSE,
        price,
    )
    assert (await _transaction(jobs_stub, txn_id)).transaction.status == pb.Transaction.SUCCESS

    _decide(provider_stack, provider, dispute_id, "lost")
    decided = await _delivery(provider_stack, dispute_id, DECIDED_EVENT[(provider, "lost")])
    replies = await _deliver_at_once(jobs_stub, provider, decided + opened, 5)
    assert sum(not r.duplicate for r in replies) == 1  # the decision, once; the rest repeats
    got = await _transaction(jobs_stub, txn_id)
    assert got.transaction.status == pb.Transaction.REFUNDED
    [(status, withdrawn)] = [(d.status, d.withdrawn_minor) for d in got.disputes]
    assert (status, withdrawn) == (Status.LOST, price)
    # Lost: the price back with the buyer (out of revenue, once), the credits back to issuance;
    # PayPal's chargeback fee an expense paid from the clearing balance.
    wanted = (
        {
            clearing: {("PROVIDER_CLEARING", currency): PAYPAL_FEE},
            fees: {("PROVIDER_CLEARING", currency): -PAYPAL_FEE},
        }
        if provider == "paypal"
        else {}
    )
    await ledger.settles_at(wanted)

    async def clean() -> bool:
        return await _findings(jobs_stub) == {}

    await wait_for(clean, timeout=20)
