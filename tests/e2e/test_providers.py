"""Every provider end to end (issue 8, API-1, API-2, CR-2, SEC-3): PayPal subscriptions through the
gateway, a Razorpay order paid on its checkout and verified by signature (a forged one refused),
and a Fatora checkout paid and confirmed by its callback once — each against its offline sandbox,
with the gateway, payments and PostgreSQL real."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from tests.e2e.conftest import System, new_company
from tests.support.razorpay_support import pay_by_card
from tests.support.service_auth import signed_aio_channel
from tests.support.waiting import eventually

RETURN_URL = "https://app.example/subscription/success"
CANCEL_URL = "https://app.example/subscription/cancel"


def subscribe(system: System, user: str, method: str) -> httpx.Response:
    return system.http.post(
        "/api/payments/subscribe",
        json={
            "userType": "COMPANY",
            "userId": user,
            "email": f"{user}@example.test",
            "plan": "MONTHLY",
            "paymentMethod": method,
            "returnUrl": RETURN_URL,
            "cancelUrl": CANCEL_URL,
        },
        headers=system.headers(user),
    )


def status_is(system: System, user: str, txn: str, status: str) -> dict:
    response = system.http.get(f"/api/payments/verify/{txn}", headers=system.headers(user))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == status, body
    return dict(body)


def test_paypal_subscription_pending_then_approved_is_success(system: System) -> None:
    user = new_company()
    started = subscribe(system, user, "PAYPAL")
    assert started.status_code == 200, started.text
    body = started.json()
    assert body["status"] == "PENDING" and "/checkoutnow?token=" in body["checkoutUrl"]
    order = parse_qs(urlsplit(body["checkoutUrl"]).query)["token"][0]
    paypal = system.stack.provider_url("paypal")
    assert httpx.get(body["checkoutUrl"]).status_code == 200
    approved = httpx.post(f"{paypal}/checkoutnow/{order}/approve", data={"funding": "balance"})
    assert approved.status_code == 303
    assert approved.headers["location"].startswith(RETURN_URL)
    done = eventually(lambda: status_is(system, user, body["transactionId"], "SUCCESS"), timeout=30)
    assert done["amountMinor"] == 3000 and done["subscriptionStartDate"]
    again = subscribe(system, user, "PAYPAL")
    assert again.status_code == 409 and again.json()["error"] == "ALREADY_SUBSCRIBED"


def test_razorpay_order_paid_verified_by_signature_forgery_refused(system: System) -> None:
    user = new_company()
    body = subscribe(system, user, "RAZORPAY").json()
    assert body["status"] == "PENDING", body
    page_url = body["checkoutUrl"]
    query = parse_qs(urlsplit(page_url).query)
    callback = query["callback_url"][0]
    assert callback.startswith(f"{system.stack.gateway_url}/api/payments/return/razorpay")
    order = urlsplit(page_url).path.rsplit("/", 1)[-1]
    razorpay = system.stack.provider_url("razorpay")
    # A forged hand-back before any payment: refused, and nothing changes.
    forged = {
        "razorpay_order_id": order,
        "razorpay_payment_id": "pay_FORGED00000000",
        "razorpay_signature": "f" * 64,
    }
    refused = system.http.post("/api/payments/razorpay/verify", json=forged)
    assert refused.status_code == 400 and refused.json()["error"] == "INVALID_SIGNATURE"
    status_is(system, user, body["transactionId"], "PENDING")
    assert httpx.get(page_url).status_code == 200
    signed = pay_by_card(razorpay, order, callback_url=callback)
    assert signed["razorpay_order_id"] == order and signed["razorpay_signature"]

    tampered = {**signed, "razorpay_signature": "f" * 64}
    refused = system.http.post("/api/payments/razorpay/verify", json=tampered)
    assert refused.status_code == 400 and refused.json()["error"] == "INVALID_SIGNATURE"

    verified = system.http.post("/api/payments/razorpay/verify", json=signed)
    assert verified.status_code == 200, verified.text
    assert verified.json()["status"] == "SUCCESS"
    status_is(system, user, body["transactionId"], "SUCCESS")
    # The browser's own callback (a form post) lands on the caller's page.
    posted = system.http.post(callback, data=signed)
    assert posted.status_code == 303 and posted.headers["location"] == RETURN_URL


async def test_fatora_checkout_paid_and_confirmed_by_its_callback_once(system: System) -> None:
    user = new_company()
    target = system.stack.services["payments"].target
    async with signed_aio_channel(target, caller="jobs", service="payments") as channel:
        stub = pb_grpc.PaymentsServiceStub(channel)
        started = await stub.Subscribe(
            pb.SubscribeRequest(
                request_id=f"fatora-{user}",
                user_type=pb.USER_TYPE_COMPANY,
                user_id=user,
                email=f"{user}@example.test",
                plan="MONTHLY",
                payment_method="FATORA",
                return_url=RETURN_URL,
                cancel_url=CANCEL_URL,
            )
        )
        txn = started.transaction
        assert txn.status == pb.Transaction.PENDING and txn.checkout_url
        page = txn.checkout_url
        payment_id = parse_qs(urlsplit(page).query)["paymentID"][0]
        parts = urlsplit(page)
        async with httpx.AsyncClient() as buyer:
            assert (await buyer.get(page)).status_code == 200
            paid = await buyer.post(
                f"{parts.scheme}://{parts.netloc}/pay/{payment_id}/pay",
                data={"card_number": "5123 4500 0000 0008", "expiry": "01/39", "cvv": "123"},
            )
        assert paid.status_code == 303
        callback = paid.headers["location"]
        assert callback.startswith(f"{system.stack.gateway_url}/api/payments/return/fatora")
        for _ in range(2):  # the customer's browser follows the callback twice (a refresh)
            back = system.http.get(callback)
            assert back.status_code == 303 and back.headers["location"] == RETURN_URL
        status_is(system, user, txn.transaction_id, "SUCCESS")
        # Settled once, whatever the callbacks and the signed webhook: one settlement event.
        events = stub.StreamSettlementEvents(pb.StreamSettlementEventsRequest(after_cursor=0))
        mine = [
            e.type
            async for e in events
            if e.HasField("transaction") and e.transaction.transaction_id == txn.transaction_id
        ]
        assert mine == ["transaction.succeeded"]
