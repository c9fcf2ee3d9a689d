"""Orders, payments and refunds through the official `razorpay` SDK: hosted checkout with the
mock bank page, auto and manual capture, declines, pending payments, refunds, the payment
signature and the automatic refund of payments left uncaptured."""

from __future__ import annotations

import json

import httpx
import pytest
import razorpay
from razorpay.errors import BadRequestError, SignatureVerificationError

from hirepay_dev.provider_sandboxes import KitAdmin, razorpay_client
from tests.support.razorpay_support import (
    MASTERCARD,
    bank_answer,
    create_order,
    pay_by_card,
    pay_by_upi,
    start_card_payment,
)


def test_wrong_key_secret_is_refused(razorpay_url: str) -> None:
    with pytest.raises(BadRequestError, match="Authentication failed"):
        razorpay_client(razorpay_url, key_secret="wrong").order.all()
    with pytest.raises(BadRequestError, match="api key provided is invalid"):
        razorpay_client(razorpay_url, key_id="rzp_test_other").order.all()


def test_order_validation_and_unknown_ids(rzp: razorpay.Client) -> None:
    with pytest.raises(BadRequestError, match=r"atleast INR 1\.00"):
        rzp.order.create({"amount": 99, "currency": "INR"})
    with pytest.raises(BadRequestError, match="currency field is required"):
        rzp.order.create({"amount": 1000})
    with pytest.raises(BadRequestError, match="does not exist"):
        rzp.order.fetch("order_doesnotexist00")
    with pytest.raises(BadRequestError, match="does not exist"):
        rzp.payment.fetch("pay_doesnotexist000")


def test_order_shape(rzp: razorpay.Client) -> None:
    order = create_order(rzp, 12_345)
    assert order["id"].startswith("order_") and len(order["id"]) == 20
    assert (order["entity"], order["status"], order["attempts"]) == ("order", "created", 0)
    assert (order["amount"], order["amount_paid"], order["amount_due"]) == (12_345, 0, 12_345)
    assert order["notes"] == {"job_id": "j_1"}
    assert rzp.order.fetch(order["id"]) == order
    assert rzp.order.payments(order["id"]) == {"entity": "collection", "count": 0, "items": []}


def test_card_payment_with_auto_capture(razorpay_url: str, rzp: razorpay.Client) -> None:
    order = create_order(rzp, 50_000)
    fields = pay_by_card(razorpay_url, order["id"])
    assert fields["razorpay_order_id"] == order["id"]
    assert rzp.utility.verify_payment_signature(fields) is True
    payment = rzp.payment.fetch(fields["razorpay_payment_id"])
    assert (payment["status"], payment["captured"], payment["method"]) == ("captured", True, "card")
    assert payment["card"]["last4"] == "1111"
    assert payment["fee"] > payment["tax"] > 0
    paid = rzp.order.fetch(order["id"])
    assert (paid["status"], paid["amount_paid"], paid["amount_due"], paid["attempts"]) == (
        "paid",
        50_000,
        0,
        1,
    )
    assert [p["id"] for p in rzp.order.payments(order["id"])["items"]] == [payment["id"]]


def test_forged_payment_signature_is_rejected(razorpay_url: str, rzp: razorpay.Client) -> None:
    order = create_order(rzp, 1_000)
    fields = pay_by_card(razorpay_url, order["id"])
    with pytest.raises(SignatureVerificationError):
        rzp.utility.verify_payment_signature({**fields, "razorpay_signature": "0" * 64})
    other = create_order(rzp, 1_000)
    with pytest.raises(SignatureVerificationError):
        rzp.utility.verify_payment_signature({**fields, "razorpay_order_id": other["id"]})


def test_manual_capture_needs_the_authorized_amount(
    razorpay_url: str, rzp: razorpay.Client
) -> None:
    order = create_order(rzp, 20_000, capture=False)
    fields = pay_by_card(razorpay_url, order["id"], card=MASTERCARD)
    payment_id = fields["razorpay_payment_id"]
    payment = rzp.payment.fetch(payment_id)
    assert (payment["status"], payment["captured"]) == ("authorized", False)
    assert rzp.order.fetch(order["id"])["status"] == "attempted"
    with pytest.raises(BadRequestError, match="must be equal to the amount authorized"):
        rzp.payment.capture(payment_id, 10_000, {"currency": "INR"})
    with pytest.raises(BadRequestError, match="captured before refund"):
        rzp.payment.refund(payment_id, {"amount": 1_000})
    captured = rzp.payment.capture(payment_id, 20_000, {"currency": "INR"})
    assert (captured["status"], captured["captured"]) == ("captured", True)
    assert rzp.order.fetch(order["id"])["status"] == "paid"
    with pytest.raises(BadRequestError, match="already been captured"):
        rzp.payment.capture(payment_id, 20_000, {"currency": "INR"})


def test_pending_until_the_bank_answers(
    razorpay_url: str, rzp: razorpay.Client, razorpay_admin: KitAdmin
) -> None:
    order = create_order(rzp, 7_500)
    started = start_card_payment(razorpay_url, order["id"])
    payment_id = started.headers["location"].split("/")[-2]
    pending = rzp.payment.fetch(payment_id)
    assert pending["status"] == "created"  # the buyer is still on the bank page
    with pytest.raises(BadRequestError, match="authorized and not yet captured"):
        rzp.payment.capture(payment_id, 7_500, {"currency": "INR"})
    decided = razorpay_admin.call(
        "POST", f"/_sandbox/payments/{payment_id}/decide", {"outcome": "success"}
    )
    assert decided["status"] == "captured"


def test_bank_failure_declines_and_the_order_can_be_paid_again(
    razorpay_url: str, rzp: razorpay.Client
) -> None:
    order = create_order(rzp, 9_900)
    failed = pay_by_card(razorpay_url, order["id"], action="failure")
    assert failed["error[code]"] == "BAD_REQUEST_ERROR"
    assert failed["error[reason]"] == "authentication_failed"
    payment_id = json.loads(failed["error[metadata]"])["payment_id"]
    payment = rzp.payment.fetch(payment_id)
    assert (payment["status"], payment["error_step"]) == ("failed", "payment_authentication")
    assert rzp.order.fetch(order["id"])["status"] == "attempted"
    ok = pay_by_card(razorpay_url, order["id"])
    assert rzp.payment.fetch(ok["razorpay_payment_id"])["status"] == "captured"
    paid = rzp.order.fetch(order["id"])
    assert (paid["status"], paid["attempts"]) == ("paid", 2)


def test_short_otp_fails(razorpay_url: str, rzp: razorpay.Client) -> None:
    order = create_order(rzp, 1_500)
    started = start_card_payment(razorpay_url, order["id"])
    fields = bank_answer(razorpay_url, started.headers["location"], "success", otp="12")
    assert fields["error[reason]"] == "incorrect_otp"


def test_upi_success_and_failure(razorpay_url: str, rzp: razorpay.Client) -> None:
    order = create_order(rzp, 3_000)
    failed = pay_by_upi(razorpay_url, order["id"], "failure@razorpay")
    assert failed["error[code]"] == "BAD_REQUEST_ERROR"
    ok = pay_by_upi(razorpay_url, order["id"], "success@razorpay")
    payment = rzp.payment.fetch(ok["razorpay_payment_id"])
    assert (payment["method"], payment["vpa"], payment["status"]) == (
        "upi",
        "success@razorpay",
        "captured",
    )


def test_invalid_and_non_test_cards(razorpay_url: str, rzp: razorpay.Client) -> None:
    order = create_order(rzp, 2_000)
    bad = httpx.post(
        f"{razorpay_url}/checkout/{order['id']}/pay",
        data={"method": "card", "card_number": "4111 1111 1111 1112"},
    )
    assert bad.status_code == 400 and "card number is invalid" in bad.text
    assert rzp.order.payments(order["id"])["count"] == 0
    declined = start_card_payment(razorpay_url, order["id"], card="4012 8888 8888 1881")
    assert declined.status_code == 200 and "Payment failed" in declined.text


def test_refunds_partial_then_rest(razorpay_url: str, rzp: razorpay.Client) -> None:
    order = create_order(rzp, 40_000)
    payment_id = pay_by_card(razorpay_url, order["id"])["razorpay_payment_id"]
    first = rzp.payment.refund(
        payment_id, {"amount": 15_000, "speed": "normal", "notes": {"why": "partial"}}
    )
    assert first["id"].startswith("rfnd_")
    assert (first["entity"], first["status"], first["amount"], first["payment_id"]) == (
        "refund",
        "processed",
        15_000,
        payment_id,
    )
    payment = rzp.payment.fetch(payment_id)
    assert (payment["amount_refunded"], payment["refund_status"], payment["status"]) == (
        15_000,
        "partial",
        "captured",
    )
    with pytest.raises(BadRequestError, match="greater than amount captured"):
        rzp.payment.refund(payment_id, {"amount": 25_001})
    rest = rzp.payment.refund(payment_id, {"amount": 25_000})
    payment = rzp.payment.fetch(payment_id)
    assert (payment["amount_refunded"], payment["refund_status"], payment["status"]) == (
        40_000,
        "full",
        "refunded",
    )
    assert rzp.refund.fetch(rest["id"])["amount"] == 25_000
    listed = rzp.payment.fetch_multiple_refund(payment_id)
    assert sorted(r["amount"] for r in listed["items"]) == [15_000, 25_000]
    with pytest.raises(BadRequestError, match="fully refunded"):
        rzp.payment.refund(payment_id, {"amount": 100})


def test_refund_idempotency_key(razorpay_url: str, rzp: razorpay.Client) -> None:
    order = create_order(rzp, 30_000)
    payment_id = pay_by_card(razorpay_url, order["id"])["razorpay_payment_id"]
    key = {"X-Refund-Idempotency": "refund-key-0001"}
    first = rzp.payment.refund(payment_id, {"amount": 10_000}, headers=dict(key))
    again = rzp.payment.refund(payment_id, {"amount": 10_000}, headers=dict(key))
    assert again["id"] == first["id"]
    assert rzp.payment.fetch(payment_id)["amount_refunded"] == 10_000
    with pytest.raises(BadRequestError, match="Different request with the same idempotency key"):
        rzp.payment.refund(payment_id, {"amount": 5_000}, headers=dict(key))
    with pytest.raises(BadRequestError, match="at least 10 characters"):
        rzp.payment.refund(payment_id, {"amount": 5_000}, headers={"X-Refund-Idempotency": "short"})


def test_uncaptured_payment_is_refunded_after_the_window(
    razorpay_url: str, rzp: razorpay.Client, razorpay_admin: KitAdmin
) -> None:
    order = create_order(rzp, 8_000, capture=False)
    payment_id = pay_by_card(razorpay_url, order["id"])["razorpay_payment_id"]
    assert rzp.payment.fetch(payment_id)["status"] == "authorized"
    razorpay_admin.advance_clock(5 * 24 * 3600)
    payment = rzp.payment.fetch(payment_id)
    assert (payment["status"], payment["amount_refunded"], payment["refund_status"]) == (
        "refunded",
        8_000,
        "full",
    )
    with pytest.raises(BadRequestError):
        rzp.payment.capture(payment_id, 8_000, {"currency": "INR"})
