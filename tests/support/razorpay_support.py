"""Helpers for the Razorpay sandbox tests: orders made with the SDK and paid the way a buyer
would, on the hosted checkout and mock bank pages."""

from __future__ import annotations

import re
import uuid
from html import escape, unescape
from typing import Any

import httpx
import razorpay

# The sandbox under test signs webhooks with this (conftest starts it with it).
WEBHOOK_SECRET = "razorpay-test-webhook-secret"
MAX_ATTEMPTS = 4
VISA = "4111 1111 1111 1111"
MASTERCARD = "5267 3181 8797 5449"
CALLBACK_URL = "https://hirepay.example/razorpay/callback"


def create_order(
    rzp: razorpay.Client, amount: int = 50_000, capture: bool = True
) -> dict[str, Any]:
    order: dict[str, Any] = rzp.order.create(
        {
            "amount": amount,
            "currency": "INR",
            "receipt": f"job-{uuid.uuid4().hex[:10]}",
            "notes": {"job_id": "j_1"},
            "payment_capture": capture,
        }
    )
    return order


def hidden_fields(html: str) -> dict[str, str]:
    return {
        unescape(name): unescape(value)
        for name, value in re.findall(r"<input type='hidden' name='([^']*)' value='([^']*)'>", html)
    }


def start_card_payment(
    base_url: str, order_id: str, card: str = VISA, callback_url: str = CALLBACK_URL
) -> httpx.Response:
    """Fill in the card form; a test card is sent on to the mock bank page (303)."""
    page = httpx.get(f"{base_url}/checkout/{order_id}", params={"callback_url": callback_url})
    assert page.status_code == 200, page.text
    return httpx.post(
        f"{base_url}/checkout/{order_id}/pay",
        data={
            "method": "card",
            "card_number": card,
            "expiry": "12/34",
            "cvv": "123",
            "callback_url": callback_url,
        },
    )


def bank_answer(
    base_url: str,
    bank_path: str,
    action: str = "success",
    otp: str = "",
    callback_url: str = CALLBACK_URL,
) -> dict[str, str]:
    page = httpx.get(f"{base_url}{bank_path}")
    assert page.status_code == 200 and "Mock bank" in page.text
    result = httpx.post(f"{base_url}{bank_path}", data={"action": action, "otp": otp})
    assert result.status_code == 200, result.text
    assert f"action='{escape(callback_url)}'" in result.text
    return hidden_fields(result.text)


def pay_by_card(
    base_url: str,
    order_id: str,
    action: str = "success",
    card: str = VISA,
    callback_url: str = CALLBACK_URL,
) -> dict[str, str]:
    """Pay an order on the pages as a buyer's browser does; returns what Checkout posts to the
    callback URL (the signed hand-back, or the failure)."""
    started = start_card_payment(base_url, order_id, card, callback_url)
    assert started.status_code == 303, started.text
    return bank_answer(base_url, started.headers["location"], action, callback_url=callback_url)


def pay_by_upi(base_url: str, order_id: str, vpa: str) -> dict[str, str]:
    result = httpx.post(
        f"{base_url}/checkout/{order_id}/pay",
        data={"method": "upi", "vpa": vpa, "callback_url": CALLBACK_URL},
    )
    assert result.status_code == 200, result.text
    return hidden_fields(result.text)
