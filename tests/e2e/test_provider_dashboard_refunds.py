"""A plan purchase refunded in full at PayPal's or Razorpay's dashboard, outside Hirepay, with
every process real (the sandboxes, gateway, payments, PostgreSQL): the sandbox's refund webhook
(`PAYMENT.CAPTURE.REFUNDED`; `refund.created` and `refund.processed`) reaches payments through
the gateway's webhook route, is verified the provider's way, and the purchase becomes REFUNDED
(API-4) with its unused credits revoked, as by the admin's refund (ESC-1, PAY-15)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx

from hirepay_dev.provider_sandboxes import paypal_client
from tests.e2e.conftest import System, new_company
from tests.e2e.test_providers import status_is, subscribe
from tests.support.razorpay_support import pay_by_card
from tests.support.waiting import eventually

PLAN = 3000  # MONTHLY, in minor units


def test_a_paypal_purchase_refunded_at_its_dashboard_is_refunded_here(system: System) -> None:
    user = new_company()
    body = subscribe(system, user, "PAYPAL").json()
    order = parse_qs(urlsplit(body["checkoutUrl"]).query)["token"][0]
    paypal = system.stack.provider_url("paypal")
    approved = httpx.post(f"{paypal}/checkoutnow/{order}/approve", data={"funding": "balance"})
    assert approved.status_code == 303
    eventually(lambda: status_is(system, user, body["transactionId"], "SUCCESS"), timeout=30)
    captured = paypal_client(paypal).orders.get_order({"id": order}).body
    capture_id = captured.purchase_units[0].payments.captures[0].id
    refunded = httpx.post(f"{paypal}/_sandbox/captures/{capture_id}/refund", json={})
    assert refunded.status_code == 200, refunded.text
    done = eventually(
        lambda: status_is(system, user, body["transactionId"], "REFUNDED"), timeout=30
    )
    assert done["amountMinor"] == PLAN


def test_a_razorpay_purchase_refunded_at_its_dashboard_is_refunded_here(system: System) -> None:
    user = new_company()
    body = subscribe(system, user, "RAZORPAY").json()
    page_url = body["checkoutUrl"]
    callback = parse_qs(urlsplit(page_url).query)["callback_url"][0]
    order = urlsplit(page_url).path.rsplit("/", 1)[-1]
    razorpay = system.stack.provider_url("razorpay")
    signed = pay_by_card(razorpay, order, callback_url=callback)
    verified = system.http.post("/api/payments/razorpay/verify", json=signed)
    assert verified.status_code == 200, verified.text
    status_is(system, user, body["transactionId"], "SUCCESS")
    payment_id = signed["razorpay_payment_id"]
    refunded = httpx.post(f"{razorpay}/_sandbox/payments/{payment_id}/refund", json={})
    assert refunded.status_code == 200, refunded.text
    eventually(lambda: status_is(system, user, body["transactionId"], "REFUNDED"), timeout=30)
