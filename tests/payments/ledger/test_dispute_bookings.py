"""Card disputes end to end (ESC-1, API-3): the Stripe sandbox disputes a payment as test mode
does, its `charge.dispute.*` webhooks reach the payments process, and the wallet's ledger holds
the money withdrawn (out of revenue) and the dispute fee (Stripe's fees account), the money
reinstated when won and none back when lost —
each booked once though every dispute event is delivered three times. Balances asserted to the
cent on the provider's clearing account and platform revenue; GetPayment shows the dispute."""

from __future__ import annotations

import asyncio
import uuid

from hirepay.payments.v1 import payments_service_pb2 as pb
from tests.payments.ledger.conftest import LedgerStack
from tests.payments.ledger.test_ledger_bookings import STRIPE, Ledger, _events
from tests.support.payments_helpers import authorize_request, branch
from tests.support.waiting import wait_for

FEE = 1_500  # the sandbox's dispute fee, as Stripe's in the US
FEES = "provider:stripe:fees"  # what Stripe charged: an expense, never drawn from revenue
Status = pb.PaymentDispute.Status


async def _captured(stub, token: str) -> pb.Payment:  # type: ignore[no-untyped-def]
    gtx = f"gtx-{uuid.uuid4().hex[:12]}"
    await stub.Authorize(authorize_request(gtx, amount=14_900, token=token))
    captured = await stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
    assert captured.payment.state == pb.Payment.State.CAPTURED
    return captured.payment


async def _dispute(stub, payment_id: str, status: int) -> pb.PaymentDispute:  # type: ignore[no-untyped-def]
    found: list[pb.PaymentDispute] = []

    async def shown() -> bool:
        reply = await stub.GetPayment(pb.GetPaymentRequest(payment_id=payment_id))
        found[:] = list(reply.disputes)
        return len(found) == 1 and found[0].status == status

    await wait_for(shown, timeout=20)
    return found[0]


def _booked(clearing: int, revenue: int, fees: int = 0) -> dict[str, dict[tuple[str, str], int]]:
    """The changes of the clearing account, platform revenue and Stripe's fees account."""
    changed = {
        STRIPE: {("PROVIDER_CLEARING", "USD"): clearing},
        "platform": {("PLATFORM_REVENUE", "USD"): revenue},
        FEES: {("PROVIDER_CLEARING", "USD"): fees},
    }
    return {owner: d for owner, d in changed.items() if any(d.values())}


async def test_the_dispute_card_withdraws_money_and_fee_once_and_a_lost_dispute_keeps_them(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    ledger = Ledger(ledger_stack, STRIPE, "platform", FEES)
    ledger_stack.admin.add_fault("webhook_duplicate", event_type="charge.dispute.*", times=3)
    try:
        payment = await _captured(jobs_stub, "pm_card_createDispute")
        await ledger.settles_at(_booked(-14_900 + 14_900 + FEE, 14_900 - 14_900, -FEE))
        opened = await _dispute(jobs_stub, payment.payment_id, Status.NEEDS_RESPONSE)
        assert (opened.amount.amount_minor, opened.withdrawn_minor, opened.fee_minor) == (
            14_900,
            14_900,
            FEE,
        )
        assert opened.reason == "fraudulent" and not opened.HasField("closed_at")
        ledger_stack.admin.close_dispute(opened.dispute_id, "lost")
        lost = await _dispute(jobs_stub, payment.payment_id, Status.LOST)
        assert lost.HasField("closed_at") and lost.reinstated_minor == 0
    finally:
        ledger_stack.admin.clear_faults()
    await asyncio.sleep(0.5)  # the worker's further rounds book nothing more
    assert ledger.changes() == _booked(FEE, 0, -FEE)
    got = await jobs_stub.GetPayment(pb.GetPaymentRequest(payment_id=payment.payment_id))
    assert got.payment.state == pb.Payment.State.CAPTURED
    # Lost in full: jobs is told once on the settlement stream, whatever the deliveries (PAY-4).
    told = [e.type for e in await _events(jobs_stub, payment.payment_id)]
    assert told.count("payment.charged_back") == 1 and "payment.refunded" not in told


async def test_a_won_dispute_reinstates_the_money_and_stripe_keeps_the_fee(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    ledger = Ledger(ledger_stack, STRIPE, "platform", FEES)
    payment = await _captured(jobs_stub, "pm_card_visa")
    await ledger.settles_at(_booked(-14_900, 14_900))
    opened = ledger_stack.admin.dispute_payment_intent(payment.provider_payment_id)
    await ledger.settles_at(_booked(FEE, 0, -FEE))
    ledger_stack.admin.add_fault("webhook_duplicate", event_type="charge.dispute.*", times=3)
    try:
        ledger_stack.admin.close_dispute(opened["id"], "won")
        won = await _dispute(jobs_stub, payment.payment_id, Status.WON)
    finally:
        ledger_stack.admin.clear_faults()
    assert (won.withdrawn_minor, won.reinstated_minor, won.fee_minor) == (14_900, 14_900, FEE)
    await ledger.settles_at(_booked(-14_900 + FEE, 14_900, -FEE))
    await asyncio.sleep(0.5)
    assert ledger.changes() == _booked(-14_900 + FEE, 14_900, -FEE)
    assert "payment.charged_back" not in [
        e.type for e in await _events(jobs_stub, payment.payment_id)
    ]
