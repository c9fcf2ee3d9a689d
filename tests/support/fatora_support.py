"""Helpers for the Fatora sandbox tests: checkouts over plain HTTP (Fatora has no SDK) and the
hosted page driven as a buyer would."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from hirepay_dev.provider_sandboxes import FATORA_API_KEY

WEBHOOK_SECRET = "fatora-test-webhook-secret"
SUCCESS_URL = "https://hirepay.example/fatora/success"
FAILURE_URL = "https://hirepay.example/fatora/failure"
MASTERCARD = "5123 4500 0000 0008"
APPROVED, DECLINED, EXPIRED, TIMED_OUT = "01/39", "05/39", "04/27", "08/28"


def api(base_url: str, api_key: str = FATORA_API_KEY, timeout: float = 10.0) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"api_key": api_key}, timeout=timeout)


def checkout(
    client: httpx.Client, amount: float = 123.10, order_id: str | None = None, **extra: Any
) -> tuple[str, str]:
    """(order_id, checkout_url) of a new checkout."""
    order_id = order_id or f"job-{uuid.uuid4().hex[:10]}"
    response = client.post(
        "/v1/payments/checkout",
        json={
            "amount": amount,
            "currency": "QAR",
            "order_id": order_id,
            "client": {
                "name": "Sandbox Buyer",
                "phone": "+97400000000",
                "email": "buyer@example.com",
            },
            "language": "en",
            "success_url": SUCCESS_URL,
            "failure_url": FAILURE_URL,
            "note": "job posting",
            **extra,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "SUCCESS", body
    return order_id, str(body["result"]["checkout_url"])


def pay(checkout_url: str, card: str = MASTERCARD, expiry: str = APPROVED) -> httpx.Response:
    page = httpx.get(checkout_url)
    assert page.status_code == 200, page.text
    parts = urlsplit(checkout_url)
    payment_id = parse_qs(parts.query)["paymentID"][0]
    return httpx.post(
        f"{parts.scheme}://{parts.netloc}/pay/{payment_id}/pay",
        data={"card_number": card, "expiry": expiry, "cvv": "123"},
    )


def redirect(response: httpx.Response) -> tuple[str, dict[str, str]]:
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    return location.split("?")[0], query
