"""Helpers for the PayPal sandbox tests: orders made with the SDK's models and approved the way
a buyer would, on the hosted page."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from paypalserversdk.models.amount_with_breakdown import AmountWithBreakdown
from paypalserversdk.models.checkout_payment_intent import CheckoutPaymentIntent
from paypalserversdk.models.order_application_context import OrderApplicationContext
from paypalserversdk.models.order_request import OrderRequest
from paypalserversdk.models.purchase_unit_request import PurchaseUnitRequest
from paypalserversdk.paypal_serversdk_client import PaypalServersdkClient

# The sandbox under test signs with these (conftest starts it with them).
WEBHOOK_SECRET = "paypal-test-webhook-secret"
WEBHOOK_ID = "1JE4291016473214C"
MAX_ATTEMPTS = 4
RETURN_URL = "https://hirepay.example/paypal/return"
CANCEL_URL = "https://hirepay.example/paypal/cancel"


def order_request(
    value: str = "100.00", intent: str = "CAPTURE", currency: str = "USD"
) -> OrderRequest:
    return OrderRequest(
        intent=CheckoutPaymentIntent.CAPTURE
        if intent == "CAPTURE"
        else CheckoutPaymentIntent.AUTHORIZE,
        purchase_units=[
            PurchaseUnitRequest(
                amount=AmountWithBreakdown(currency_code=currency, value=value),
                custom_id=f"job-{uuid.uuid4().hex[:8]}",
            )
        ],
        application_context=OrderApplicationContext(return_url=RETURN_URL, cancel_url=CANCEL_URL),
    )


def create_order(
    paypal: PaypalServersdkClient, value: str = "100.00", intent: str = "CAPTURE", **options: Any
) -> Any:
    response = paypal.orders.create_order(
        {"body": order_request(value, intent), "prefer": "return=representation", **options}
    )
    return response.body


def link(resource: Any, rel: str) -> str:
    return next(item.href for item in resource.links if item.rel == rel)


def approve_on_page(order: Any, funding: str = "balance") -> httpx.Response:
    """Open the approve link and press Continue with the chosen funding, as the buyer."""
    approve = link(order, "approve")
    page = httpx.get(approve)
    assert page.status_code == 200, page.text
    base = f"{urlsplit(approve).scheme}://{urlsplit(approve).netloc}"
    return httpx.post(f"{base}/checkoutnow/{order.id}/approve", data={"funding": funding})


def redirect_query(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 303, response.text
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}


def approved_order(
    paypal: PaypalServersdkClient,
    value: str = "100.00",
    intent: str = "CAPTURE",
    funding: str = "balance",
) -> Any:
    order = create_order(paypal, value, intent)
    redirect_query(approve_on_page(order, funding))
    return order
