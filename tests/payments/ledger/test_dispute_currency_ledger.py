"""A card dispute whose balance transactions Stripe settled in another currency than the
payment's (ESC-1 every cent; the account settles in EUR, the charge is in USD), end to end: the
Stripe sandbox opens the dispute with its money converted and its fee charged in EUR, the
`charge.dispute.*` webhooks reach the payments process on PostgreSQL, and the wallet holds each
amount exactly in its own unit — the disputed USD out of USD revenue where the capture booked it,
Stripe's EUR fee between its EUR clearing and fees accounts — nothing converted by Hirepay, each
booked once though every event is delivered three times, and the ledger auditor clean."""

from __future__ import annotations

import asyncio
import uuid

from hirepay.payments.v1 import payments_service_pb2 as pb
from tests.payments.ledger.conftest import LedgerStack
from tests.payments.ledger.test_ledger_bookings import STRIPE, Ledger, _findings, _transfer
from tests.support.payments_helpers import authorize_request, branch
from tests.support.waiting import wait_for

AMOUNT = 14_900
FEE = 1_500  # the sandbox's dispute fee, here in EUR cents
FEES = "provider:stripe:fees"
Status = pb.PaymentDispute.Status


async def test_a_dispute_settled_in_eur_books_usd_and_eur_each_in_its_unit(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    ledger = Ledger(ledger_stack, STRIPE, "platform", FEES)
    gtx = f"gtx-{uuid.uuid4().hex[:12]}"
    await jobs_stub.Authorize(authorize_request(gtx, amount=AMOUNT))
    captured = await jobs_stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
    payment = captured.payment
    await ledger.settles_at(
        {
            STRIPE: {("PROVIDER_CLEARING", "USD"): -AMOUNT},
            "platform": {("PLATFORM_REVENUE", "USD"): AMOUNT},
        }
    )
    ledger_stack.admin.add_fault("webhook_duplicate", event_type="charge.dispute.*", times=3)
    try:
        opened = ledger_stack.admin.dispute_payment_intent(
            payment.provider_payment_id, settlement=("eur", 0.92)
        )
        [withdrawal] = opened["balance_transactions"]
        assert (withdrawal["currency"], withdrawal["amount"], withdrawal["fee"]) == (
            "eur",
            -13_708,  # 14,900 USD cents at 0.92
            FEE,
        )
        # The disputed USD back to clearing out of revenue; the EUR fee in EUR.
        await ledger.settles_at(
            {
                STRIPE: {("PROVIDER_CLEARING", "EUR"): FEE},
                FEES: {("PROVIDER_CLEARING", "EUR"): -FEE},
            }
        )
        ledger_stack.admin.close_dispute(opened["id"], "won")
        won = {
            STRIPE: {("PROVIDER_CLEARING", "USD"): -AMOUNT, ("PROVIDER_CLEARING", "EUR"): FEE},
            "platform": {("PLATFORM_REVENUE", "USD"): AMOUNT},
            FEES: {("PROVIDER_CLEARING", "EUR"): -FEE},
        }
        await ledger.settles_at(won)
    finally:
        ledger_stack.admin.clear_faults()
    await asyncio.sleep(0.5)  # the worker's further rounds and the duplicates book nothing more
    assert ledger.changes() == won
    reply = await jobs_stub.GetPayment(pb.GetPaymentRequest(payment_id=payment.payment_id))
    [dispute] = reply.disputes
    assert dispute.status == Status.WON
    # In the dispute's (USD) currency: the amounts as the dispute's; the EUR fee is not a USD one.
    assert (dispute.withdrawn_minor, dispute.reinstated_minor, dispute.fee_minor) == (
        AMOUNT,
        AMOUNT,
        0,
    )
    transfer = await _transfer(
        ledger_stack, f"payment:{payment.payment_id}:dispute:{withdrawal['id']}"
    )
    assert transfer is not None

    async def clean() -> bool:
        return await _findings(jobs_stub) == {}

    await wait_for(clean, timeout=20)
