"""The gateway's coin purchase (ESC-3) against fake backends: the caller buys only for
themselves, the amount and provider reach payments as sent, retries with one Idempotency-Key map
to one request, and refusals read as PAY-11 errors."""

from __future__ import annotations

import httpx

from hirepay.common.v1 import common_pb2
from hirepay.payments.v1 import payments_service_pb2 as pay_pb
from hirepay_platform.errors import ErrorKind
from hirepay_platform.reasons import FailureReason
from tests.support.gateway_fakes import domain_error
from tests.support.gateway_harness import Backends, bearer

BODY = {
    "amountMinor": 1000,
    "currency": "USD",
    "provider": "FATORA",
    "returnUrl": "https://app.example/coins/bought",
    "cancelUrl": "https://app.example/coins/cancelled",
}


def opened(request: pay_pb.PurchaseCoinsRequest) -> pay_pb.CoinCheckoutResponse:
    return pay_pb.CoinCheckoutResponse(
        payment=pay_pb.Payment(
            payment_id="pay_coins1",
            owner_id=request.buyer_id,
            amount=request.amount,
            state=pay_pb.Payment.REQUIRES_ACTION,
            provider=request.provider or "stripe",
        ),
        coins=1000,
        checkout_url="https://pay.example/checkout/1",
    )


async def test_a_buyer_opens_a_checkout_for_their_own_coins(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.payments.on("PurchaseCoins", opened)
    headers = {**bearer("customer", "cu-1"), "Idempotency-Key": "buy-1"}
    resp = await client.post("/api/coins/purchase", json=BODY, headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "paymentId": "pay_coins1",
        "status": "REQUIRES_ACTION",
        "coins": 1000,
        "amountMinor": 1000,
        "currency": "USD",
        "provider": "fatora",
        "checkoutUrl": "https://pay.example/checkout/1",
    }
    again = await client.post("/api/coins/purchase", json=BODY, headers=headers)
    assert again.status_code == 200
    first, second = backends.payments.calls_to("PurchaseCoins")
    assert first.request.buyer_id == "cu-1" and first.request.provider == "fatora"
    assert first.request.amount == common_pb2.Money(amount_minor=1000, currency="USD")
    assert first.request.request_id == second.request.request_id  # one key, one purchase
    other = await client.post(
        "/api/coins/purchase",
        json={**BODY, "provider": None},
        headers={**bearer("customer", "cu-2"), "Idempotency-Key": "buy-1"},
    )
    assert other.status_code == 200
    third = backends.payments.calls_to("PurchaseCoins")[2].request
    assert third.buyer_id == "cu-2" and third.provider == ""  # the service's default provider
    assert third.request_id != first.request.request_id  # keys are scoped to the caller


async def test_bad_purchases_are_refused_before_payments(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.payments.on("PurchaseCoins", opened)
    headers = bearer("customer", "cu-1")
    assert (await client.post("/api/coins/purchase", json=BODY)).status_code == 401
    for bad in (
        {**BODY, "amountMinor": 0},
        {**BODY, "amountMinor": -5},
        {**BODY, "provider": "PAYPAL"},
        {**BODY, "returnUrl": "https://evil.example/steal"},
        {**BODY, "buyerId": "someone-else"},
    ):
        resp = await client.post("/api/coins/purchase", json=bad, headers=headers)
        assert resp.status_code == 400, (bad, resp.text)
        assert resp.json()["error"] == "VALIDATION_FAILED"
    assert backends.payments.calls_to("PurchaseCoins") == []


async def test_a_refusal_of_payments_reads_as_pay_11(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    def refused(request: pay_pb.PurchaseCoinsRequest) -> pay_pb.CoinCheckoutResponse:
        raise domain_error(
            FailureReason.PAYMENT_PROVIDER_UNAVAILABLE, ErrorKind.UNAVAILABLE, retry="true"
        )

    backends.payments.on("PurchaseCoins", refused)
    resp = await client.post("/api/coins/purchase", json=BODY, headers=bearer("customer", "cu-1"))
    assert resp.status_code == 502, resp.text
    assert resp.json()["error"] == "PAYMENT_PROVIDER_UNAVAILABLE"
