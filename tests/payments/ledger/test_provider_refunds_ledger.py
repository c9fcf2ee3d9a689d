"""Refunds made at Stripe's dashboard, outside Hirepay (ESC-1 every cent, API-4, PAY-15), through
the real payments process on PostgreSQL, the real wallet and the Stripe sandbox, whose webhooks
(`charge.refunded`, `refund.created`, ...) are relayed to payments: the refund, created with the
secret key straight at the sandbox as the dashboard does, is booked through provider clearing
once (balances asserted to the cent, the ledger auditor clean); partial and full; the same event
delivered ten times at once and its twin event book it once; Hirepay's own refunds, racing their
events, are booked once; a coin purchase's coins go back with its cash."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable

import asyncpg
import grpc
import stripe

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay_dev.sandbox_client import stripe_client
from tests.payments.ledger.conftest import LedgerStack
from tests.payments.ledger.test_ledger_bookings import (
    STRIPE,
    Ledger,
    _coins_bought,
    _findings,
    _payment,
    _transfer,
    paid_subscription,
)
from tests.support.payments_helpers import (
    WEBHOOK_SECRET,
    authorize_request,
    branch,
    reason,
)
from tests.support.waiting import wait_for

State = pb.Payment.State
API_KEY = "sk_test_ledgertests"
FEE = 14_900
AUTH = {"Authorization": f"Bearer {API_KEY}"}


async def _captured_fee(jobs_stub) -> pb.Payment:
    gtx = f"gtx-{uuid.uuid4().hex[:12]}"
    await jobs_stub.Authorize(authorize_request(gtx, amount=FEE))
    reply = await jobs_stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
    assert reply.payment.state == State.CAPTURED
    return reply.payment


async def _dashboard_refund(stack: LedgerStack, intent_id: str, amount: int | None = None) -> str:
    """A refund made with the secret key at Stripe itself (its dashboard), not through Hirepay."""
    params: dict[str, object] = {"payment_intent": intent_id}
    if amount is not None:
        params["amount"] = amount
    made = await stripe_client(stack.sandbox_url, API_KEY).v1.refunds.create_async(params=params)
    return str(made.id)


async def _refunds(stack: LedgerStack, payment_id: str) -> list[tuple[str, str, int, str]]:
    """The payment's refund records: (request id, status, amount, provider refund id)."""
    conn = await asyncpg.connect(stack.payments_db.replace("postgresql+asyncpg", "postgresql"))
    try:
        rows = await conn.fetch(
            "SELECT request_id, status, amount_minor, provider_refund_id FROM refunds"
            " WHERE payment_id = $1 ORDER BY created_at, id",
            payment_id,
        )
    finally:
        await conn.close()
    return [(r[0], r[1], r[2], r[3] or "") for r in rows]


async def test_a_dashboard_refund_in_full_is_booked_once_and_refunds_the_payment(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    ledger = Ledger(ledger_stack, STRIPE, "platform")
    payment = await _captured_fee(jobs_stub)
    pid = payment.payment_id
    await ledger.settles_at(
        {
            STRIPE: {("PROVIDER_CLEARING", "USD"): -FEE},
            "platform": {("PLATFORM_REVENUE", "USD"): FEE},
        }
    )
    re_id = await _dashboard_refund(ledger_stack, payment.provider_payment_id)
    got = await wait_for(lambda: _payment(jobs_stub, pid, State.REFUNDED), timeout=20)
    assert (got.captured_minor, got.refunded_minor) == (FEE, FEE)
    await ledger.settles_at({})  # revenue back to clearing: captured fees minus refunds
    [(request_id, status, amount, provider_id)] = await _refunds(ledger_stack, pid)
    assert (request_id, status, amount, provider_id) == (
        f"provider:{re_id}",
        "SUCCEEDED",
        FEE,
        re_id,
    )

    # The ledger auditor finds every refund booked and revenue equal to fees minus refunds.
    async def clean() -> bool:
        return await _findings(jobs_stub) == {}

    await wait_for(clean, timeout=20)


async def test_a_partial_dashboard_refund_leaves_the_rest_refundable(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    ledger = Ledger(ledger_stack, STRIPE, "platform")
    payment = await _captured_fee(jobs_stub)
    pid = payment.payment_id
    await _dashboard_refund(ledger_stack, payment.provider_payment_id, 4_900)
    got = await wait_for(lambda: _payment(jobs_stub, pid, State.PARTIALLY_REFUNDED), timeout=20)
    assert got.captured_minor - got.refunded_minor == 10_000
    await ledger.settles_at(
        {
            STRIPE: {("PROVIDER_CLEARING", "USD"): -10_000},
            "platform": {("PLATFORM_REVENUE", "USD"): 10_000},
        }
    )
    # Hirepay's own refund of the rest: its events book nothing more.
    done = await jobs_stub.Refund(pb.RefundRequest(request_id="r-rest", payment_id=pid))
    assert done.refund.amount.amount_minor == 10_000
    await wait_for(lambda: _payment(jobs_stub, pid, State.REFUNDED), timeout=20)
    await ledger.settles_at({})
    await asyncio.sleep(1.0)  # the refund's webhooks have arrived and changed nothing
    assert ledger.changes() == {}
    assert [r[1] for r in await _refunds(ledger_stack, pid)] == ["SUCCEEDED", "SUCCEEDED"]


async def test_the_same_event_ten_times_at_once_and_its_twin_book_once(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    ledger = Ledger(ledger_stack, STRIPE, "platform")
    payment = await _captured_fee(jobs_stub)
    pi = payment.provider_payment_id
    re_id, about = await dashboard_refund_undelivered(ledger_stack, pi, 900)
    replies = await deliver_at_once(jobs_stub, about, 10)
    assert sum(r.applied for r in replies) == 1
    assert sum(r.duplicate for r in replies) == 18  # nine repeats of each of the two events
    assert await _refunds(ledger_stack, payment.payment_id) == [
        (f"provider:{re_id}", "SUCCEEDED", 900, re_id)
    ]
    await ledger.settles_at(
        {
            STRIPE: {("PROVIDER_CLEARING", "USD"): -(FEE - 900)},
            "platform": {("PLATFORM_REVENUE", "USD"): FEE - 900},
        }
    )


def _signed(event: dict) -> tuple[bytes, str]:
    body = json.dumps(event).encode()
    return body, stripe.WebhookSignature.generate_signature_header(body.decode(), WEBHOOK_SECRET)


async def dashboard_refund_undelivered(
    stack: LedgerStack, intent_id: str, amount: int
) -> tuple[str, list[dict]]:
    """A dashboard refund of `amount` whose two events (charge.refunded, refund.created) the
    sandbox does not deliver, so that their deliveries are the test's alone: its id and events."""
    stack.admin.add_fault("webhook_drop", event_type="*refund*", count=2)
    try:
        re_id = await _dashboard_refund(stack, intent_id, amount)
    finally:
        stack.admin.clear_faults()
    about = stripe_events(
        stack,
        ("charge.refunded", "refund.created"),
        lambda o: o.get("payment_intent") == intent_id,
    )
    assert {e["type"] for e in about} == {"charge.refunded", "refund.created"}
    return re_id, about


def stripe_events(
    stack: LedgerStack, types: tuple[str, ...], about: Callable[[dict], bool]
) -> list[dict]:
    """The sandbox's latest events of `types` whose object `about` accepts."""
    events = stack.admin.http.get("/v1/events", params={"limit": 100}, headers=AUTH).json()
    return [e for e in events["data"] if e["type"] in types and about(e["data"]["object"])]


async def deliver_at_once(jobs_stub, events: list[dict], times: int) -> list:
    """Each event signed and delivered `times` times, every delivery at once."""
    bodies = [_signed(e) for e in events for _ in range(times)]
    return await asyncio.gather(
        *(
            jobs_stub.HandleProviderEvent(
                pb.HandleProviderEventRequest(provider="stripe", payload=body, signature=sig)
            )
            for body, sig in bodies
        )
    )


async def test_hirepays_own_refunds_racing_their_events_are_booked_once(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    """Ten payments refunded by Hirepay at once, each refund's answer lost after Stripe made it
    (its webhooks, sent as Stripe creates it, arrive while its record is still pending): each is
    recorded once, by its own path (the poller replays the call with its key), never by its
    events."""
    ledger = Ledger(ledger_stack, STRIPE, "platform")
    payments = [await _captured_fee(jobs_stub) for _ in range(10)]
    ledger_stack.admin.add_fault(
        "timeout_after_commit", seconds=0.5, path_prefix="/v1/refunds", count=10
    )
    try:
        answers = await asyncio.gather(
            *(
                jobs_stub.Refund(pb.RefundRequest(request_id="r-1", payment_id=p.payment_id))
                for p in payments
            ),
            return_exceptions=True,
        )
    finally:
        ledger_stack.admin.clear_faults()
    lost = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert lost, answers  # the race happened: answers lost after Stripe refunded
    assert {reason(a)[1] for a in lost} <= {"PAYMENT_TIMEOUT", "PAYMENT_PROVIDER_UNAVAILABLE"}
    for p in payments:
        await wait_for(lambda p=p: _payment(jobs_stub, p.payment_id, State.REFUNDED), timeout=20)
    await ledger.settles_at({})
    await asyncio.sleep(1.0)
    assert ledger.changes() == {}
    for p in payments:
        [(request_id, status, amount, _)] = await _refunds(ledger_stack, p.payment_id)
        assert (request_id, status, amount) == ("r-1", "SUCCEEDED", FEE)
        assert await _transfer(ledger_stack, f"payment:{p.payment_id}:capture") is not None


async def test_a_dashboard_refund_of_a_coin_purchase_takes_its_coins_back(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    buyer = f"buyer-{uuid.uuid4().hex[:12]}"
    ledger = Ledger(ledger_stack, STRIPE, "platform", buyer)
    pid = await _coins_bought(ledger_stack, jobs_stub, buyer, 2_000)
    got = (await jobs_stub.GetPayment(pb.GetPaymentRequest(payment_id=pid))).payment
    await _dashboard_refund(ledger_stack, got.provider_payment_id, 500)
    await ledger.settles_at(
        {
            STRIPE: {("PROVIDER_CLEARING", "USD"): -1_500},
            "platform": {("ISSUANCE", "USD"): 1_500, ("ISSUANCE", "COIN"): -1_500},
            buyer: {("USER", "COIN"): 1_500},
        }
    )
    await _dashboard_refund(ledger_stack, got.provider_payment_id)  # the rest
    await ledger.settles_at({})  # every coin and every cent back once
    await wait_for(lambda: _payment(jobs_stub, pid, State.REFUNDED), timeout=20)


async def test_a_subscription_refunded_in_full_at_the_dashboard_is_refunded_and_unbooked(
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
    await _dashboard_refund(ledger_stack, str(session.payment_intent))
    await ledger.settles_at(  # the money back to clearing, out of revenue
        {
            STRIPE: {("PROVIDER_CLEARING", "USD"): 3_000},
            "platform": {("PLATFORM_REVENUE", "USD"): -3_000},
        }
    )

    async def refunded() -> bool:
        got = await jobs_stub.GetTransaction(
            pb.GetTransactionRequest(transaction_id=txn.transaction_id)
        )
        return got.transaction.status == pb.Transaction.REFUNDED

    await wait_for(refunded, timeout=20)
