"""A plan purchase disputed at Stripe (ESC-1 every cent, CR-2 credits, API-4, PAY-15), through the
real payments process on PostgreSQL, the real wallet and the Stripe sandbox whose webhooks are
relayed to payments, every dispute event delivered three times: the withdrawal and Stripe's fee
booked once out of revenue; GetTransaction shows the dispute; lost, the purchase is REFUNDED and
its credits revoked (booked as credits only: the money moved by the withdrawal); the ledger
auditor clean. Balances asserted to the cent, credits to the unit."""

from __future__ import annotations

import asyncio
import uuid

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay_dev.sandbox_client import stripe_client
from tests.payments.ledger.conftest import LedgerStack
from tests.payments.ledger.test_ledger_bookings import STRIPE, Ledger, _findings, _transfer
from tests.payments.ledger.test_provider_refunds_ledger import API_KEY
from tests.support.waiting import wait_for

PRICE, JOBS, CANDIDATES = 4_900, 2_500, 50  # SWIFT_HIRE in USD (the default catalogue)
FEE = 1_500  # the sandbox's dispute fee, as Stripe's in the US
FEES = "provider:stripe:fees"
Status = pb.PaymentDispute.Status


async def _transaction(stub, transaction_id: str) -> pb.TransactionResponse:  # type: ignore[no-untyped-def]
    return await stub.GetTransaction(pb.GetTransactionRequest(transaction_id=transaction_id))


async def test_a_purchase_disputed_and_lost_is_booked_once_refunded_and_its_credits_revoked(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    company = f"company-{uuid.uuid4().hex[:12]}"
    ledger = Ledger(ledger_stack, STRIPE, "platform", FEES, company)
    txn = (
        await jobs_stub.Subscribe(
            pb.SubscribeRequest(
                request_id="s1",
                user_type=pb.USER_TYPE_COMPANY,
                user_id=company,
                email="hr@acme.example",
                plan="SWIFT_HIRE",
                payment_method="STRIPE",
                return_url="https://app.example/subscription/success",
                cancel_url="https://app.example/subscription/cancel",
            )
        )
    ).transaction
    assert ledger_stack.admin.pay_checkout(txn.checkout_url).status_code == 303
    paid = {
        STRIPE: {("PROVIDER_CLEARING", "USD"): -PRICE},
        "platform": {
            ("PLATFORM_REVENUE", "USD"): PRICE,
            ("ISSUANCE", "JOB_CREDIT"): -JOBS,
            ("ISSUANCE", "CANDIDATE_CREDIT"): -CANDIDATES,
        },
        company: {("USER", "JOB_CREDIT"): JOBS, ("USER", "CANDIDATE_CREDIT"): CANDIDATES},
    }
    await ledger.settles_at(paid)
    got = await _transaction(jobs_stub, txn.transaction_id)
    session = await stripe_client(
        ledger_stack.sandbox_url, API_KEY
    ).v1.checkout.sessions.retrieve_async(got.transaction.provider_transaction_id)

    ledger_stack.admin.add_fault("webhook_duplicate", event_type="charge.dispute.*", times=3)
    opened = ledger_stack.admin.dispute_payment_intent(str(session.payment_intent))
    # Open: the price and Stripe's fee withdrawn; the purchase stays paid with its credits.
    await ledger.settles_at(
        {
            STRIPE: {("PROVIDER_CLEARING", "USD"): FEE},
            "platform": {k: v for k, v in paid["platform"].items() if k[0] == "ISSUANCE"},
            FEES: {("PROVIDER_CLEARING", "USD"): -FEE},
            company: paid[company],
        }
    )
    shown = await _transaction(jobs_stub, txn.transaction_id)
    assert shown.transaction.status == pb.Transaction.SUCCESS
    [dispute] = shown.disputes
    assert (dispute.dispute_id, dispute.status) == (opened["id"], Status.NEEDS_RESPONSE)
    assert (dispute.amount.amount_minor, dispute.withdrawn_minor, dispute.fee_minor) == (
        PRICE,
        PRICE,
        FEE,
    )

    ledger_stack.admin.close_dispute(opened["id"], "lost")

    async def refunded() -> bool:
        got = await _transaction(jobs_stub, txn.transaction_id)
        return got.transaction.status == pb.Transaction.REFUNDED

    await wait_for(refunded, timeout=20)
    # Lost: the credits go back to issuance; the money stays withdrawn, booked once.
    lost = {
        STRIPE: {("PROVIDER_CLEARING", "USD"): FEE},
        FEES: {("PROVIDER_CLEARING", "USD"): -FEE},
    }
    await ledger.settles_at(lost)
    await asyncio.sleep(0.5)  # the worker's further rounds book nothing more
    assert ledger.changes() == lost
    [dispute] = (await _transaction(jobs_stub, txn.transaction_id)).disputes
    assert dispute.status == Status.LOST and dispute.HasField("closed_at")
    revoked = await _transfer(ledger_stack, f"payment:{txn.transaction_id}:refund:full")
    assert revoked is not None
    assert {e.amount.currency for e in revoked.entries} == {"JOB_CREDIT", "CANDIDATE_CREDIT"}

    async def clean() -> bool:
        return await _findings(jobs_stub) == {}

    await wait_for(clean, timeout=20)
