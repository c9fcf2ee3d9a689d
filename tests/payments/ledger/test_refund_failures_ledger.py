"""Refunds that succeeded and then failed at Stripe (ESC-1 every cent, API-4, PAY-15), through the
real payments process on PostgreSQL, the real wallet and the Stripe sandbox, whose webhooks are
relayed to payments: a refund of test mode's refund-failure card (4000 0000 0000 5126) fails by
itself a moment after it succeeded, and the payment goes back to CAPTURED with its refund's
booking reversed by a balanced transfer of its own (balances asserted to the cent, the ledger
auditor clean); the failure's three events, each delivered ten times at once, reverse it once;
a coin purchase's refund made at the dashboard that fails gives its coins back."""

from __future__ import annotations

import asyncio
import uuid

from hirepay.payments.v1 import payments_service_pb2 as pb
from tests.payments.ledger.conftest import LedgerStack
from tests.payments.ledger.test_ledger_bookings import (
    STRIPE,
    Ledger,
    _coins_bought,
    _findings,
    _payment,
    _transfer,
)
from tests.payments.ledger.test_provider_refunds_ledger import (
    _dashboard_refund,
    _refunds,
    deliver_at_once,
    stripe_events,
)
from tests.support.payments_helpers import authorize_request, branch
from tests.support.waiting import wait_for

State = pb.Payment.State
FEE = 14_900
CAPTURED_FEE = {
    STRIPE: {("PROVIDER_CLEARING", "USD"): -FEE},
    "platform": {("PLATFORM_REVENUE", "USD"): FEE},
}
FAILURE_EVENTS = ("refund.failed", "refund.updated", "charge.refund.updated")


async def _captured_fee(jobs_stub, token: str = "pm_card_visa") -> pb.Payment:
    gtx = f"gtx-{uuid.uuid4().hex[:12]}"
    await jobs_stub.Authorize(authorize_request(gtx, amount=FEE, token=token))
    reply = await jobs_stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
    assert reply.payment.state == State.CAPTURED
    return reply.payment


async def test_hirepays_refund_of_the_refund_failure_card_is_reversed_when_it_fails(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    ledger = Ledger(ledger_stack, STRIPE, "platform")
    payment = await _captured_fee(jobs_stub, "pm_card_refundFail")
    pid = payment.payment_id
    done = await jobs_stub.Refund(pb.RefundRequest(request_id="r-1", payment_id=pid))
    assert done.payment.state == State.REFUNDED  # Stripe said succeeded
    # A moment later Stripe says it failed: the payment is CAPTURED again, nothing refunded.
    got = await wait_for(lambda: _payment(jobs_stub, pid, State.CAPTURED), timeout=20)
    assert (got.captured_minor, got.refunded_minor) == (FEE, 0)
    [(request_id, status, amount, _)] = await _refunds(ledger_stack, pid)
    assert (request_id, status, amount) == ("r-1", "FAILED", FEE)
    await ledger.settles_at(CAPTURED_FEE)  # revenue as if it had never been refunded
    refund_id = done.refund.refund_id
    booked = await _transfer(ledger_stack, f"payment:{pid}:refund:{refund_id}")
    reversal = await _transfer(ledger_stack, f"payment:{pid}:refund:{refund_id}:failed")
    assert booked is not None and reversal is not None  # the booking kept, reversed by its own

    async def clean() -> bool:
        return await _findings(jobs_stub) == {}

    await wait_for(clean, timeout=20)
    # Refundable again, in full.
    again = await jobs_stub.Refund(pb.RefundRequest(request_id="r-2", payment_id=pid))
    assert again.refund.amount.amount_minor == FEE
    # That refund of the card fails as well, a moment later: its booking and the reversal land
    # before the test ends, not in the next test's ledger (audit16: a run where the refund's
    # booking came before the next test's starting balances and its reversal after them).
    second = again.refund.refund_id

    async def reversed_again() -> bool:
        return await _transfer(ledger_stack, f"payment:{pid}:refund:{second}:failed") is not None

    await wait_for(reversed_again, timeout=20)
    await ledger.settles_at(CAPTURED_FEE)


async def test_the_failures_events_ten_times_at_once_reverse_it_once(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    ledger = Ledger(ledger_stack, STRIPE, "platform")
    payment = await _captured_fee(jobs_stub)
    pid, pi = payment.payment_id, payment.provider_payment_id
    re_id = await _dashboard_refund(ledger_stack, pi, 4_900)
    await wait_for(lambda: _payment(jobs_stub, pid, State.PARTIALLY_REFUNDED), timeout=20)
    await ledger.settles_at(
        {
            STRIPE: {("PROVIDER_CLEARING", "USD"): -10_000},
            "platform": {("PLATFORM_REVENUE", "USD"): 10_000},
        }
    )
    # The failure's events are not delivered by the sandbox: their deliveries are ours alone.
    ledger_stack.admin.add_fault("webhook_drop", event_type="*refund*", count=3)
    try:
        await asyncio.to_thread(ledger_stack.admin.fail_refund, re_id, "lost_or_stolen_card")
    finally:
        ledger_stack.admin.clear_faults()
    about = stripe_events(ledger_stack, FAILURE_EVENTS, lambda o: o["id"] == re_id)
    assert sorted(e["type"] for e in about) == sorted(FAILURE_EVENTS)
    replies = await deliver_at_once(jobs_stub, about, 10)
    assert sum(r.applied for r in replies) == 1
    assert sum(r.duplicate for r in replies) == 27  # nine repeats of each of the three events
    assert await _refunds(ledger_stack, pid) == [(f"provider:{re_id}", "FAILED", 4_900, re_id)]
    got = await _payment(jobs_stub, pid, State.CAPTURED)
    assert got is not None and got.refunded_minor == 0
    await ledger.settles_at(CAPTURED_FEE)


async def test_a_dashboard_refund_of_a_coin_purchase_that_fails_gives_the_coins_back(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    buyer = f"buyer-{uuid.uuid4().hex[:12]}"
    ledger = Ledger(ledger_stack, STRIPE, "platform", buyer)
    pid = await _coins_bought(ledger_stack, jobs_stub, buyer, 2_000)
    bought = {
        STRIPE: {("PROVIDER_CLEARING", "USD"): -2_000},
        "platform": {("ISSUANCE", "USD"): 2_000, ("ISSUANCE", "COIN"): -2_000},
        buyer: {("USER", "COIN"): 2_000},
    }
    await ledger.settles_at(bought)
    got = (await jobs_stub.GetPayment(pb.GetPaymentRequest(payment_id=pid))).payment
    re_id = await _dashboard_refund(ledger_stack, got.provider_payment_id, 500)
    await ledger.settles_at(
        {
            STRIPE: {("PROVIDER_CLEARING", "USD"): -1_500},
            "platform": {("ISSUANCE", "USD"): 1_500, ("ISSUANCE", "COIN"): -1_500},
            buyer: {("USER", "COIN"): 1_500},
        }
    )
    await asyncio.to_thread(ledger_stack.admin.fail_refund, re_id)
    await ledger.settles_at(bought)  # every cent and every coin as right after the purchase
    await wait_for(lambda: _payment(jobs_stub, pid, State.CAPTURED), timeout=20)
