"""Refunds made at PayPal's and Razorpay's dashboards, outside Hirepay, learned by webhook (ESC-1
every cent, ESC-3 coins, API-3, API-4, PAY-15), through the real payments process on PostgreSQL,
the real wallet and both offline sandboxes: a posting fee paid on the provider's page and
refunded in its dashboard (the sandbox's admin route) is recorded and booked once whatever the
deliveries (each of the refund's signed webhooks delivered ten times at once, its twin event
too), partial then full (REFUNDED: `payment.refunded` for jobs), balances asserted to the cent
and the ledger auditor clean; a coin purchase refunded there takes its coins back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import asyncpg
import grpc
import httpx
import pytest

from hirepay.common.v1 import common_pb2
from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay_dev.pg import libpq_url
from hirepay_dev.procs import Process
from hirepay_dev.provider_sandboxes import (
    PAYPAL_CLIENT_ID,
    PAYPAL_CLIENT_SECRET,
    RAZORPAY_KEY_ID,
    RAZORPAY_KEY_SECRET,
    paypal_client,
    razorpay_client,
    start_provider_sandbox,
)
from hirepay_dev.services import PAYMENTS, WALLET, RunningService, start_service
from tests.payments.ledger.test_ledger_bookings import Ledger, _findings
from tests.payments.ledger.test_provider_refunds_ledger import _refunds
from tests.support.payments_helpers import authorize_request, branch
from tests.support.provider_harnesses import Receiver
from tests.support.razorpay_support import pay_by_card
from tests.support.service_auth import signed_aio_channel
from tests.support.waiting import wait_for

State = pb.Payment.State
CHECKOUT = pb.PAYMENT_METHOD_TYPE_CHECKOUT
WEBHOOK_SECRET = "provref-webhook-secret"
PAYPAL_WEBHOOK_ID = "PROVREFWEBHOOK00001"
RETURN_URL = "https://app.example/back"
# Per provider: the currency and the posting fee paid in it (minor units).
FEES = {"paypal": ("USD", 14_900), "razorpay": ("INR", 50_000)}
# The refund webhooks each provider sends for one refund (all delivered by the sandbox).
REFUND_EVENTS = {
    "paypal": {"PAYMENT.CAPTURE.REFUNDED"},
    "razorpay": {"refund.created", "refund.processed"},
}


@dataclass
class ProviderStack:
    """What the ledger tests' helpers read too (Ledger: the wallet; _refunds: the database)."""

    payments: RunningService
    payments_db: str
    wallet: RunningService
    urls: dict[str, str]
    receiver: Receiver


@pytest.fixture(scope="module")
def provider_stack(make_service_database: Callable[[str], str]) -> Iterator[ProviderStack]:
    """Payments with PayPal and Razorpay (their sandboxes' webhooks recorded, not relayed: each
    test delivers them itself), on the real wallet."""
    receiver = Receiver()
    processes: list[Process] = []
    paypal, paypal_url = start_provider_sandbox(
        "paypal_sandbox",
        name="provref-paypal",
        env={
            "PAYPAL_SANDBOX_WEBHOOK_URL": receiver.url,
            "PAYPAL_SANDBOX_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "PAYPAL_SANDBOX_WEBHOOK_ID": PAYPAL_WEBHOOK_ID,
        },
    )
    processes.append(paypal)
    razorpay, razorpay_url = start_provider_sandbox(
        "razorpay_sandbox",
        name="provref-razorpay",
        env={
            "RAZORPAY_SANDBOX_WEBHOOK_URL": receiver.url,
            "RAZORPAY_SANDBOX_WEBHOOK_SECRET": WEBHOOK_SECRET,
        },
    )
    processes.append(razorpay)
    wallet = start_service(WALLET, make_service_database("wallet"), log_name="provref-wallet")
    payments_db = make_service_database("payments")
    payments = start_service(
        PAYMENTS,
        payments_db,
        env={
            "PAYMENTS_DEFAULT_PROVIDER": "paypal",
            "PAYMENTS_PAYPAL_CLIENT_ID": PAYPAL_CLIENT_ID,
            "PAYMENTS_PAYPAL_CLIENT_SECRET": PAYPAL_CLIENT_SECRET,
            "PAYMENTS_PAYPAL_API_BASE": paypal_url,
            "PAYMENTS_PAYPAL_WEBHOOK_ID": PAYPAL_WEBHOOK_ID,
            "PAYMENTS_RAZORPAY_KEY_ID": RAZORPAY_KEY_ID,
            "PAYMENTS_RAZORPAY_KEY_SECRET": RAZORPAY_KEY_SECRET,
            "PAYMENTS_RAZORPAY_API_BASE": razorpay_url,
            "PAYMENTS_RAZORPAY_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "PAYMENTS_PROVIDER_TIMEOUT_SECONDS": "5",
            "PAYMENTS_POLL_INTERVAL_SECONDS": "0.2",
            "PAYMENTS_POLL_MAX_INTERVAL_SECONDS": "0.5",
            "PAYMENTS_WALLET_TARGET": wallet.target,
            "PAYMENTS_GRANT_INTERVAL_SECONDS": "0.1",
            "PAYMENTS_COIN_RATES": "USD:100,INR:100",
        },
        log_name="provref-payments",
    )
    try:
        yield ProviderStack(
            payments,
            payments_db,
            wallet,
            {"paypal": paypal_url, "razorpay": razorpay_url},
            receiver,
        )
    finally:
        payments.stop()
        wallet.stop()
        for process in processes:
            process.stop()
        receiver.stop()


@pytest.fixture
async def jobs_stub(provider_stack: ProviderStack) -> AsyncIterator[pb_grpc.PaymentsServiceStub]:
    """Payments as the jobs service (and the gateway, for webhooks) calls it."""
    channel = signed_aio_channel(provider_stack.payments.target, caller="jobs", service="payments")
    yield pb_grpc.PaymentsServiceStub(channel)
    await channel.close()


@pytest.fixture(params=sorted(FEES), ids=sorted(FEES))
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def _pay_on_the_page(
    stack: ProviderStack, stub: pb_grpc.PaymentsServiceStub, provider: str, url: str
) -> None:
    """The buyer pays on the provider's page and comes back (the signed return confirmed)."""
    base = stack.urls[provider]
    if provider == "paypal":
        order = url.rsplit("token=", 1)[-1]
        async with httpx.AsyncClient() as http:
            approved = await http.post(
                f"{base}/_sandbox/orders/{order}/approve", json={"funding": "balance"}
            )
        assert approved.status_code == 200, approved.text
        params = {"token": order}
    else:
        order = url.split("/checkout/", 1)[1].split("?", 1)[0]
        callback = httpx.URL(url).params["callback_url"]
        params = await asyncio.to_thread(pay_by_card, base, order, callback_url=callback)
    await stub.ConfirmCheckoutReturn(
        pb.ConfirmCheckoutReturnRequest(provider=provider, params=params)
    )


async def _captured_fee(
    stack: ProviderStack, stub: pb_grpc.PaymentsServiceStub, provider: str
) -> pb.Payment:
    """A posting fee paid on the provider's page (authorized there), then captured."""
    currency, fee = FEES[provider]
    gtx = _id("gtx")
    started = await stub.Authorize(
        authorize_request(
            gtx,
            amount=fee,
            currency=currency,
            method=CHECKOUT,
            token="",
            return_url=RETURN_URL,
            provider=provider,
        )
    )
    assert started.payment.state == State.REQUIRES_ACTION, started.payment
    await _pay_on_the_page(stack, stub, provider, started.payment.next_action_url)
    captured = await stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
    assert captured.payment.state == State.CAPTURED, captured.payment
    return captured.payment


def _dashboard_refund(stack: ProviderStack, provider: str, payment_id: str, amount: int) -> str:
    """A refund made in the provider's dashboard (the sandbox's admin route); its id."""
    base = stack.urls[provider]
    if provider == "paypal":
        order = paypal_client(base).orders.get_order({"id": payment_id}).body
        capture_id = order.purchase_units[0].payments.captures[0].id
        answer = httpx.post(
            f"{base}/_sandbox/captures/{capture_id}/refund", json={"amount_minor": amount}
        )
    else:
        answer = httpx.post(
            f"{base}/_sandbox/payments/{payment_id}/refund", json={"amount": amount}
        )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


async def _deliveries(
    stack: ProviderStack, provider: str, refund_id: str
) -> list[tuple[dict[str, str], bytes]]:
    """The refund's webhook deliveries as the sandbox sent them (headers, exact body): every
    event type the provider sends for a refund, once each."""
    wanted = REFUND_EVENTS[provider]

    def found() -> dict[str, tuple[dict[str, str], bytes]]:
        by_type: dict[str, tuple[dict[str, str], bytes]] = {}
        for headers, body in list(stack.receiver.received):
            if refund_id.encode() not in body:
                continue
            for kind in wanted:
                if f'"{kind}"'.encode() in body:
                    by_type.setdefault(kind, (headers, body))
        return by_type

    async def all_there() -> bool:
        return set(found()) == wanted

    await wait_for(all_there, timeout=20)
    return list(found().values())


def _signing(headers: dict[str, str]) -> dict[str, str]:
    """What the gateway passes on: the provider's signing and event-id headers."""
    return {k: v for k, v in headers.items() if k.startswith(("paypal-", "x-razorpay-"))}


async def _deliver_at_once(
    stub: pb_grpc.PaymentsServiceStub,
    provider: str,
    deliveries: list[tuple[dict[str, str], bytes]],
    times: int,
) -> list[pb.HandleProviderEventResponse]:
    """Each delivery `times` times, all at once (a provider's retries and twin events)."""
    return list(
        await asyncio.gather(
            *(
                stub.HandleProviderEvent(
                    pb.HandleProviderEventRequest(
                        provider=provider, payload=body, headers=_signing(headers)
                    )
                )
                for headers, body in deliveries
                for _ in range(times)
            )
        )
    )


async def test_a_dashboard_refund_is_booked_once_whatever_the_deliveries(
    provider_stack: ProviderStack, jobs_stub: pb_grpc.PaymentsServiceStub, provider: str
) -> None:
    currency, fee = FEES[provider]
    clearing = f"provider:{provider}"
    ledger = Ledger(provider_stack, clearing, "platform")
    payment = await _captured_fee(provider_stack, jobs_stub, provider)
    pid, provider_id = payment.payment_id, payment.provider_payment_id
    await ledger.settles_at(
        {
            clearing: {("PROVIDER_CLEARING", currency): -fee},
            "platform": {("PLATFORM_REVENUE", currency): fee},
        }
    )
    part = fee // 5
    first = _dashboard_refund(provider_stack, provider, provider_id, part)
    deliveries = await _deliveries(provider_stack, provider, first)
    replies = await _deliver_at_once(jobs_stub, provider, deliveries, 10)
    # One delivery records and books it; every other copy of that event is a duplicate, and
    # the twin event (Razorpay's refund.created beside refund.processed) finds it recorded.
    assert sum(r.applied for r in replies) == 1
    assert sum(r.duplicate for r in replies) == 9 * len(deliveries)
    assert await _refunds(provider_stack, pid) == [(f"provider:{first}", "SUCCEEDED", part, first)]
    got = (await jobs_stub.GetPayment(pb.GetPaymentRequest(payment_id=pid))).payment
    assert (got.state, got.refunded_minor) == (State.PARTIALLY_REFUNDED, part)
    await ledger.settles_at(
        {
            clearing: {("PROVIDER_CLEARING", currency): -(fee - part)},
            "platform": {("PLATFORM_REVENUE", currency): fee - part},
        }
    )
    # The rest, refunded there too: REFUNDED (jobs hears payment.refunded), nothing left.
    rest = _dashboard_refund(provider_stack, provider, provider_id, fee - part)
    replies = await _deliver_at_once(
        jobs_stub, provider, await _deliveries(provider_stack, provider, rest), 3
    )
    assert sum(r.applied for r in replies) == 1
    got = (await jobs_stub.GetPayment(pb.GetPaymentRequest(payment_id=pid))).payment
    assert (got.state, got.refunded_minor) == (State.REFUNDED, fee)
    assert [r[3] for r in await _refunds(provider_stack, pid)] == [first, rest]
    await ledger.settles_at({})  # revenue back to clearing: captured fees minus refunds
    assert await _settlement_types(provider_stack, pid) >= {"payment.refunded"}

    async def clean() -> bool:
        return await _findings(jobs_stub) == {}

    await wait_for(clean, timeout=20)


async def _settlement_types(stack: ProviderStack, payment_id: str) -> set[str]:
    """The settlement events told about the payment (what jobs reads)."""
    conn = await asyncpg.connect(libpq_url(stack.payments_db))
    try:
        rows = await conn.fetch("SELECT type FROM outbox WHERE payment_id = $1", payment_id)
    finally:
        await conn.close()
    return {r[0] for r in rows}


async def test_a_dashboard_refund_of_a_coin_purchase_takes_its_coins_back(
    provider_stack: ProviderStack, jobs_stub: pb_grpc.PaymentsServiceStub, provider: str
) -> None:
    currency, amount = FEES[provider]
    buyer = _id("buyer")
    clearing = f"provider:{provider}"
    ledger = Ledger(provider_stack, clearing, "platform", buyer)
    opened = await jobs_stub.PurchaseCoins(
        pb.PurchaseCoinsRequest(
            request_id=_id("buy"),
            buyer_id=buyer,
            amount=common_pb2.Money(amount_minor=amount, currency=currency),
            provider=provider,
            email="buyer@example.com",
            return_url=RETURN_URL,
            cancel_url="https://app.example/coins/cancelled",
        )
    )
    assert opened.coins == amount and opened.payment.provider == provider
    await _pay_on_the_page(provider_stack, jobs_stub, provider, opened.checkout_url)
    await ledger.settles_at(
        {
            clearing: {("PROVIDER_CLEARING", currency): -amount},
            "platform": {("ISSUANCE", currency): amount, ("ISSUANCE", "COIN"): -amount},
            buyer: {("USER", "COIN"): amount},
        }
    )
    pid = opened.payment.payment_id
    got = (await jobs_stub.GetPayment(pb.GetPaymentRequest(payment_id=pid))).payment
    refund_id = _dashboard_refund(provider_stack, provider, got.provider_payment_id, amount)
    deliveries = await _deliveries(provider_stack, provider, refund_id)
    replies = await _deliver_at_once(jobs_stub, provider, deliveries, 5)
    assert sum(r.applied for r in replies) == 1
    await ledger.settles_at({})  # every coin back, the cash refunded: nothing left anywhere
    got = (await jobs_stub.GetPayment(pb.GetPaymentRequest(payment_id=pid))).payment
    assert (got.state, got.refunded_minor) == (State.REFUNDED, amount)


# Where each provider's refund call goes (a fault there loses the refund's answer).
REFUND_PATHS = {"paypal": "/v2/payments/captures", "razorpay": "/v1/payments"}


async def test_hirepays_own_refund_whose_answer_is_lost_is_not_booked_by_its_events(
    provider_stack: ProviderStack, jobs_stub: pb_grpc.PaymentsServiceStub, provider: str
) -> None:
    """Hirepay's own refund carries its record's id at the provider (PayPal's custom_id,
    Razorpay's notes). Its answer lost (the provider made it, then answered 502), its record is
    pending with no provider id when its events arrive, ten times each at once: they record and
    book nothing (matched by that id); the poller replays the call and books it, once."""
    _, fee = FEES[provider]
    clearing = f"provider:{provider}"
    ledger = Ledger(provider_stack, clearing, "platform")
    payment = await _captured_fee(provider_stack, jobs_stub, provider)
    pid = payment.payment_id
    base = provider_stack.urls[provider]
    # Every refund call answers 502 once made (the poller's replays too, until cleared), so
    # the record stays pending, unanswered, while the events are delivered.
    fault = {"kind": "error_after_commit", "status": 502, "method": "POST"}
    async with httpx.AsyncClient() as http:
        armed = await http.post(
            f"{base}/_sandbox/faults", json={**fault, "path_prefix": REFUND_PATHS[provider]}
        )
        assert armed.status_code < 300, armed.text
        try:
            try:
                answer = await jobs_stub.Refund(
                    pb.RefundRequest(request_id=_id("r"), payment_id=pid)
                )
                assert answer.refund.status == "PENDING", answer.refund
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            [(_, status, _, known)] = await _refunds(provider_stack, pid)
            assert (status, known) == ("PENDING", "")
            made = await asyncio.to_thread(_provider_refund_ids, provider_stack, provider, payment)
            [refund_id] = made
            replies = await _deliver_at_once(
                jobs_stub, provider, await _deliveries(provider_stack, provider, refund_id), 10
            )
            assert sum(r.applied for r in replies) == 0
            [(_, status, _, known)] = await _refunds(provider_stack, pid)
            assert (status, known) == ("PENDING", "")  # still its own path's to record
        finally:
            await http.delete(f"{base}/_sandbox/faults")

    async def resolved() -> bool:
        return [r[1] for r in await _refunds(provider_stack, pid)] == ["SUCCEEDED"]

    await wait_for(resolved, timeout=20)
    assert [r[2:] for r in await _refunds(provider_stack, pid)] == [(fee, refund_id)]
    got = (await jobs_stub.GetPayment(pb.GetPaymentRequest(payment_id=pid))).payment
    assert (got.state, got.refunded_minor) == (State.REFUNDED, fee)
    await ledger.settles_at({})
    await asyncio.sleep(0.5)  # the booking worker's next rounds change nothing either
    assert ledger.changes() == {}


def _provider_refund_ids(stack: ProviderStack, provider: str, payment: pb.Payment) -> list[str]:
    """The refunds the provider holds for the payment, read with its own SDK."""
    base = stack.urls[provider]
    if provider == "paypal":
        order = paypal_client(base).orders.get_order({"id": payment.provider_payment_id}).body
        return [r.id for r in order.purchase_units[0].payments.refunds or []]
    listed = razorpay_client(base).payment.fetch_multiple_refund(payment.provider_payment_id)
    return [str(r["id"]) for r in listed["items"]]


async def test_razorpays_auto_refund_of_a_voided_authorization_is_recorded_only(
    provider_stack: ProviderStack, jobs_stub: pb_grpc.PaymentsServiceStub
) -> None:
    """Razorpay has no void: an authorization Hirepay let go is refunded by Razorpay itself
    once the capture window has passed (`refund.created`, `refund.processed`). Nothing was
    taken, so nothing is booked, and the events are recorded, never refused as "not captured
    yet" (which would have Razorpay send them for days)."""
    currency, fee = FEES["razorpay"]
    ledger = Ledger(provider_stack, "provider:razorpay", "platform")
    gtx = _id("gtx")
    started = await jobs_stub.Authorize(
        authorize_request(
            gtx,
            amount=fee,
            currency=currency,
            method=CHECKOUT,
            token="",
            return_url=RETURN_URL,
            provider="razorpay",
        )
    )
    await _pay_on_the_page(provider_stack, jobs_stub, "razorpay", started.payment.next_action_url)
    voided = await jobs_stub.Void(pb.VoidRequest(request_id=f"v-{gtx}", branch=branch(gtx)))
    assert voided.payment.state == State.VOIDED, voided.payment
    base = provider_stack.urls["razorpay"]
    async with httpx.AsyncClient() as http:  # the capture window (5 days) passes
        advanced = await http.post(f"{base}/_sandbox/clock/advance", json={"seconds": 6 * 86400})
        assert advanced.status_code < 300, advanced.text
    listed = await asyncio.to_thread(
        _provider_refund_ids, provider_stack, "razorpay", voided.payment
    )
    [refund_id] = listed
    replies = await _deliver_at_once(
        jobs_stub, "razorpay", await _deliveries(provider_stack, "razorpay", refund_id), 3
    )
    assert sum(r.applied for r in replies) == 0
    assert sum(not r.duplicate for r in replies) == 2  # each event recorded once, unapplied
    got = await jobs_stub.GetPayment(pb.GetPaymentRequest(payment_id=voided.payment.payment_id))
    assert (got.payment.state, got.payment.refunded_minor) == (State.VOIDED, 0)
    assert await _refunds(provider_stack, voided.payment.payment_id) == []
    await asyncio.sleep(0.5)
    assert ledger.changes() == {}
