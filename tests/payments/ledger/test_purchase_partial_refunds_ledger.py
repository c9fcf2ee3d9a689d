"""A subscription purchase refunded in part at Stripe's dashboard (ESC-1 every cent, API-4,
PAY-15), through the real payments process on PostgreSQL, the real wallet and the Stripe sandbox
whose webhooks are relayed to payments: the refunded money goes back to clearing out of revenue
once (the purchase stays SUCCESS and keeps its credits), though its two events are each delivered
ten times at once; the refund of the rest then makes it REFUNDED and books only the rest
(balances asserted to the cent, the ledger auditor clean)."""

from __future__ import annotations

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay_dev.sandbox_client import stripe_client
from tests.payments.ledger.conftest import LedgerStack
from tests.payments.ledger.test_ledger_bookings import (
    STRIPE,
    Ledger,
    _findings,
    _transfer,
    paid_subscription,
)
from tests.payments.ledger.test_provider_refunds_ledger import (
    API_KEY,
    _dashboard_refund,
    dashboard_refund_undelivered,
    deliver_at_once,
)
from tests.support.waiting import wait_for


async def _status(jobs_stub, transaction_id: str) -> int:
    got = await jobs_stub.GetTransaction(pb.GetTransactionRequest(transaction_id=transaction_id))
    return got.transaction.status


async def test_a_partial_dashboard_refund_of_a_purchase_is_booked_once_and_the_rest_after(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    txn = await paid_subscription(ledger_stack, jobs_stub)
    ledger = Ledger(ledger_stack, STRIPE, "platform")
    got = await jobs_stub.GetTransaction(
        pb.GetTransactionRequest(transaction_id=txn.transaction_id)
    )
    session = await stripe_client(
        ledger_stack.sandbox_url, API_KEY
    ).v1.checkout.sessions.retrieve_async(got.transaction.provider_transaction_id)
    pi = str(session.payment_intent)
    re_id, about = await dashboard_refund_undelivered(ledger_stack, pi, 1_000)
    replies = await deliver_at_once(jobs_stub, about, 10)
    assert sum(r.applied for r in replies) == 1
    assert sum(r.duplicate for r in replies) == 18
    await ledger.settles_at(
        {
            STRIPE: {("PROVIDER_CLEARING", "USD"): 1_000},
            "platform": {("PLATFORM_REVENUE", "USD"): -1_000},
        }
    )
    assert await _status(jobs_stub, txn.transaction_id) == pb.Transaction.SUCCESS
    assert await _transfer(ledger_stack, f"payment:{txn.transaction_id}:refund:{re_id}")

    async def clean() -> bool:
        return await _findings(jobs_stub) == {}

    await wait_for(clean, timeout=20)

    await _dashboard_refund(ledger_stack, pi)  # the rest, 2,000
    await ledger.settles_at(
        {
            STRIPE: {("PROVIDER_CLEARING", "USD"): 3_000},
            "platform": {("PLATFORM_REVENUE", "USD"): -3_000},
        }
    )

    async def refunded() -> bool:
        return await _status(jobs_stub, txn.transaction_id) == pb.Transaction.REFUNDED

    await wait_for(refunded, timeout=20)
    full = await _transfer(ledger_stack, f"payment:{txn.transaction_id}:refund:full")
    assert full is not None
    await wait_for(clean, timeout=20)
