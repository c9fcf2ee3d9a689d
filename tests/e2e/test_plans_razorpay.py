"""Seed 003's own flow end to end with Razorpay (CR-2): an order for Swift Hire opens a
subscription on Hold, the payment on Razorpay's checkout is verified by its signature, and only
then is it Active with its credits issued on the ledger — once, whatever the replays; a forged
or tampered signature changes nothing."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx

from hirepay_dev.provider_sandboxes import KitAdmin
from tests.e2e.conftest import System, new_company
from tests.e2e.credits_support import (
    CANDIDATE,
    JOB,
    credits,
    ledger,
    verify,
    wait_credits,
)
from tests.support.razorpay_support import pay_by_card


def order(system: System, company: str) -> httpx.Response:
    return system.http.post(
        "/api/payments/subscribe",
        json={
            "userType": "COMPANY",
            "userId": company,
            "email": f"{company}@example.test",
            "plan": "SWIFT_HIRE",
            "paymentMethod": "RAZORPAY",
            "returnUrl": "https://app.example/plans/success",
            "cancelUrl": "https://app.example/plans/cancel",
        },
        headers=system.headers(company),
    )


def test_razorpay_order_pay_verify_issues_the_plans_credits_once(system: System) -> None:
    company = new_company()
    started = order(system, company)
    assert started.status_code == 200, started.text
    body = started.json()
    assert (body["subscriptionStatus"], body["paymentStatus"]) == ("Hold", "created")
    page_url = body["checkoutUrl"]
    callback = parse_qs(urlsplit(page_url).query)["callback_url"][0]
    order_id = urlsplit(page_url).path.rsplit("/", 1)[-1]
    forged = {
        "razorpay_order_id": order_id,
        "razorpay_payment_id": "pay_FORGED00000000",
        "razorpay_signature": "f" * 64,
    }
    refused = system.http.post("/api/payments/razorpay/verify", json=forged)
    assert refused.status_code == 400 and refused.json()["error"] == "INVALID_SIGNATURE"
    assert verify(system, company, body["transactionId"])["subscriptionStatus"] == "Hold"

    razorpay = system.stack.provider_url("razorpay")
    # Razorpay also reports the payment by webhook (payment.captured, order.paid), which
    # settles the order by itself: held back until the end, so that what the browser's
    # verification (forged, tampered, then signed) does is seen alone, not raced by them.
    admin = KitAdmin(razorpay)
    admin.add_fault("webhook_reorder")
    try:
        signed = pay_by_card(razorpay, order_id, callback_url=callback)
        tampered = {**signed, "razorpay_signature": "0" * 64}
        refused = system.http.post("/api/payments/razorpay/verify", json=tampered)
        assert refused.status_code == 400
        assert credits(system, company)["jobCredits"] == 0 and ledger(system, company) == {}

        for _ in range(3):  # the verification replayed: one activation, one issuance
            verified = system.http.post("/api/payments/razorpay/verify", json=signed)
            assert verified.status_code == 200, verified.text
            assert verified.json()["status"] == "SUCCESS"
        shown = verify(system, company, body["transactionId"])
        assert (shown["subscriptionStatus"], shown["paymentStatus"]) == ("Active", "paid")
        assert wait_credits(system, company, 2500, 50)["maxJobPosts"] == 5
        assert ledger(system, company) == {("USER", JOB): 2500, ("USER", CANDIDATE): 50}
    finally:
        admin.clear_faults()
        admin.flush_webhooks()
        admin.close()
