"""Razorpay webhooks (X-Razorpay-Signature, verifiable with the SDK; retries; drop and duplicate
faults) and the API faults seen through the official SDK: latency, 5xx, dropped connections and
answers lost after a refund took effect, recovered with X-Refund-Idempotency."""

from __future__ import annotations

import json
import time

import httpx
import pytest
import razorpay
import requests
from razorpay.errors import ServerError, SignatureVerificationError

from hirepay_dev.provider_sandboxes import KitAdmin
from tests.support.razorpay_support import WEBHOOK_SECRET, create_order, pay_by_card
from tests.support.webhook_receiver import ProviderReceiver


def test_payment_events_are_signed_and_verify(
    razorpay_url: str, rzp: razorpay.Client, razorpay_receiver: ProviderReceiver
) -> None:
    order = create_order(rzp, 11_000)
    payment_id = pay_by_card(razorpay_url, order["id"])["razorpay_payment_id"]
    authorized = razorpay_receiver.wait_about(payment_id, "payment.authorized")[0]
    captured = razorpay_receiver.wait_about(payment_id, "payment.captured")[0]
    paid = razorpay_receiver.wait_about(payment_id, "order.paid")[0]
    assert authorized.event["payload"]["payment"]["entity"]["status"] == "authorized"
    assert captured.event["payload"]["payment"]["entity"]["status"] == "captured"
    assert paid.event["contains"] == ["payment", "order"]
    assert paid.event["payload"]["order"]["entity"]["status"] == "paid"
    for delivery in (authorized, captured, paid):
        assert delivery.event["entity"] == "event"
        signature = delivery.header("X-Razorpay-Signature")
        assert rzp.utility.verify_webhook_signature(
            delivery.body.decode(), signature, WEBHOOK_SECRET
        )
        assert delivery.header("X-Razorpay-Event-Id").startswith("evt_")
    with pytest.raises(SignatureVerificationError):
        rzp.utility.verify_webhook_signature(captured.body.decode(), "0" * 64, WEBHOOK_SECRET)
    tampered = captured.body.decode().replace('"captured"', '"failed"', 1)
    with pytest.raises(SignatureVerificationError):
        rzp.utility.verify_webhook_signature(
            tampered, captured.header("X-Razorpay-Signature"), WEBHOOK_SECRET
        )


def test_failed_and_refund_events(
    razorpay_url: str, rzp: razorpay.Client, razorpay_receiver: ProviderReceiver
) -> None:
    order = create_order(rzp, 12_000)
    failed = pay_by_card(razorpay_url, order["id"], action="failure")
    failed_id = json.loads(failed["error[metadata]"])["payment_id"]
    event = razorpay_receiver.wait_about(failed_id, "payment.failed")[0].event
    assert event["payload"]["payment"]["entity"]["error_reason"] == "authentication_failed"
    payment_id = pay_by_card(razorpay_url, order["id"])["razorpay_payment_id"]
    refund = rzp.payment.refund(payment_id, {"amount": 2_000})
    processed = razorpay_receiver.wait_about(refund["id"], "refund.processed")[0].event
    assert processed["contains"] == ["refund", "payment"]
    assert processed["payload"]["payment"]["entity"]["refund_status"] == "partial"
    razorpay_receiver.wait_about(refund["id"], "refund.created")


def test_deliveries_retry_until_2xx(
    razorpay_url: str,
    rzp: razorpay.Client,
    razorpay_admin: KitAdmin,
    razorpay_receiver: ProviderReceiver,
) -> None:
    order = create_order(rzp, 13_000, capture=False)
    payment_id = pay_by_card(razorpay_url, order["id"])["razorpay_payment_id"]
    razorpay_receiver.wait_about(payment_id, "payment.authorized")
    razorpay_receiver.fail(payment_id, 500, 502, event_type="payment.captured")
    rzp.payment.capture(payment_id, 13_000, {"currency": "INR"})
    tries = razorpay_receiver.wait_about(payment_id, "payment.captured", count=3)
    assert [t.answered for t in tries] == [500, 502, 200]
    assert len({t.body for t in tries}) == 1
    (record,) = razorpay_admin.wait_for_deliveries(tries[0].header("X-Razorpay-Event-Id"))
    assert record["status"] == "succeeded"


def test_webhook_drop_and_duplicate(
    razorpay_url: str,
    rzp: razorpay.Client,
    razorpay_admin: KitAdmin,
    razorpay_receiver: ProviderReceiver,
) -> None:
    razorpay_admin.add_fault("webhook_drop", count=1, event_type="payment.authorized")
    razorpay_admin.add_fault("webhook_duplicate", times=2, count=1, event_type="payment.captured")
    order = create_order(rzp, 14_000)
    payment_id = pay_by_card(razorpay_url, order["id"])["razorpay_payment_id"]
    copies = razorpay_receiver.wait_about(payment_id, "payment.captured", count=2)
    assert len({c.header("X-Razorpay-Event-Id") for c in copies}) == 1
    razorpay_receiver.wait_about(payment_id, "order.paid")
    assert razorpay_receiver.about(payment_id, "payment.authorized") == []
    dropped = [
        d
        for d in razorpay_admin.deliveries(event_type="payment.authorized")
        if d["object_id"] == payment_id
    ]
    assert [d["status"] for d in dropped] == ["dropped"]


def test_latency_fault(rzp: razorpay.Client, razorpay_admin: KitAdmin) -> None:
    """At least the injected delay for the faulted call (a lower bound: load only adds); the
    fault fired once and is spent (the sandbox's record); the next call answers within the delay
    it would have waited, a gap a loaded machine does not close."""
    razorpay_admin.add_fault("latency", ms=2_000, count=1, path_prefix="/v1/orders")
    started = time.monotonic()
    create_order(rzp, 1_000)
    assert time.monotonic() - started >= 2.0
    assert razorpay_admin.faults() == []
    started = time.monotonic()
    create_order(rzp, 1_000)
    assert time.monotonic() - started < 2.0


def test_server_error_fault_raises_server_error(
    rzp: razorpay.Client, razorpay_admin: KitAdmin
) -> None:
    razorpay_admin.add_fault("error", status=503, count=1, method="POST", path_prefix="/v1/orders")
    with pytest.raises(ServerError):
        create_order(rzp, 1_000)
    assert create_order(rzp, 1_000)["status"] == "created"


def test_down_fault_and_nothing_happened(
    razorpay_url: str, rzp: razorpay.Client, razorpay_admin: KitAdmin
) -> None:
    order = create_order(rzp, 5_000, capture=False)
    payment_id = pay_by_card(razorpay_url, order["id"])["razorpay_payment_id"]
    razorpay_admin.add_fault("down", count=1, path_prefix="/v1/payments/*/capture")
    with pytest.raises(requests.exceptions.ConnectionError):
        rzp.payment.capture(payment_id, 5_000, {"currency": "INR"})
    assert rzp.payment.fetch(payment_id)["status"] == "authorized"


def test_lost_refund_answer_is_recovered_with_the_idempotency_key(
    razorpay_url: str, rzp: razorpay.Client, razorpay_admin: KitAdmin
) -> None:
    order = create_order(rzp, 6_000)
    payment_id = pay_by_card(razorpay_url, order["id"])["razorpay_payment_id"]
    razorpay_admin.add_fault("down_after_commit", count=1, path_prefix="/v1/payments/*/refund")
    headers = {"X-Refund-Idempotency": "lost-answer-refund-1"}
    with pytest.raises(requests.exceptions.ConnectionError):
        rzp.payment.refund(payment_id, {"amount": 6_000}, headers=dict(headers))
    assert rzp.payment.fetch(payment_id)["status"] == "refunded"  # it happened
    replay = rzp.payment.refund(payment_id, {"amount": 6_000}, headers=dict(headers))
    assert rzp.payment.fetch_multiple_refund(payment_id)["items"][0]["id"] == replay["id"]
    assert rzp.payment.fetch_multiple_refund(payment_id)["count"] == 1


def test_error_after_commit_on_capture(
    razorpay_url: str, rzp: razorpay.Client, razorpay_admin: KitAdmin
) -> None:
    order = create_order(rzp, 7_000, capture=False)
    payment_id = pay_by_card(razorpay_url, order["id"])["razorpay_payment_id"]
    razorpay_admin.add_fault(
        "error_after_commit", status=500, count=1, path_prefix="/v1/payments/*/capture"
    )
    with pytest.raises(ServerError):
        rzp.payment.capture(payment_id, 7_000, {"currency": "INR"})
    # Capture carries no idempotency key at Razorpay: the caller reads the payment to learn the outcome.
    assert rzp.payment.fetch(payment_id)["status"] == "captured"


def test_timeout_fault_client_gives_up_and_no_order_is_made(
    rzp: razorpay.Client, razorpay_admin: KitAdmin
) -> None:
    receipt = f"timeout-{time.monotonic_ns()}"
    razorpay_admin.add_fault("timeout", seconds=5, count=1, method="POST", path_prefix="/v1/orders")
    started = time.monotonic()
    with pytest.raises(requests.exceptions.Timeout):
        rzp.order.create({"amount": 1_000, "currency": "INR", "receipt": receipt}, timeout=1)
    assert time.monotonic() - started < 3
    time.sleep(0.2)
    assert [o for o in rzp.order.all({"count": 100})["items"] if o["receipt"] == receipt] == []


def test_a_dashboard_refund_sends_the_apis_refund_events_and_is_listed_in_pages(
    razorpay_url: str, rzp: razorpay.Client, razorpay_receiver: ProviderReceiver
) -> None:
    """A refund made on the dashboard (the admin route) is the API's refund: the same signed
    `refund.created` and `refund.processed` (refund and payment), no notes of the merchant's;
    the payment's refunds are listed in pages as Razorpay's API lists them (`count`, `skip`)."""
    order = create_order(rzp, 50_000)
    payment_id = pay_by_card(razorpay_url, order["id"])["razorpay_payment_id"]
    made = [
        httpx.post(f"{razorpay_url}/_sandbox/payments/{payment_id}/refund", json={"amount": 1_000})
        for _ in range(12)
    ]
    assert {m.status_code for m in made} == {200}
    first = made[0].json()
    assert (first["status"], first["amount"], first["notes"]) == ("processed", 1_000, [])
    processed = razorpay_receiver.wait_about(first["id"], "refund.processed")[0]
    rzp.utility.verify_webhook_signature(
        processed.body.decode(), processed.header("X-Razorpay-Signature"), WEBHOOK_SECRET
    )
    assert processed.event["payload"]["refund"]["entity"]["payment_id"] == payment_id
    razorpay_receiver.wait_about(first["id"], "refund.created")
    assert rzp.payment.fetch(payment_id)["amount_refunded"] == 12_000
    page = rzp.payment.fetch_multiple_refund(payment_id)  # Razorpay's default count: 10
    rest = rzp.payment.fetch_multiple_refund(payment_id, {"count": 10, "skip": 10})
    assert (page["count"], rest["count"]) == (10, 2)
    ids = {r["id"] for r in page["items"] + rest["items"]}
    assert ids == {m.json()["id"] for m in made}
    too_much = httpx.post(
        f"{razorpay_url}/_sandbox/payments/{payment_id}/refund", json={"amount": 40_000}
    )
    assert too_much.status_code == 409 and "greater than amount captured" in too_much.text
