"""PayPal webhooks: events for each step, signed per transmission, verifiable through
`POST /v1/notifications/verify-webhook-signature` (forged or altered ones fail), retried until a
2xx, and the drop / duplicate / reorder faults."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import zlib
from typing import Any

import httpx
from paypalserversdk.paypal_serversdk_client import PaypalServersdkClient

from hirepay_dev.provider_sandboxes import KitAdmin
from tests.support.paypal_support import MAX_ATTEMPTS, WEBHOOK_ID, WEBHOOK_SECRET, approved_order
from tests.support.webhook_receiver import Delivery, ProviderReceiver


def _token(paypal_url: str) -> str:
    response = httpx.post(
        f"{paypal_url}/v1/oauth2/token",
        auth=("hirepay-sandbox-client-id", "hirepay-sandbox-client-secret"),
        data={"grant_type": "client_credentials"},
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def _verify(paypal_url: str, delivery: Delivery, **override: Any) -> str:
    """Ask the sandbox, as a webhook listener would, whether a delivery is genuine."""
    body = {
        "auth_algo": delivery.header("PAYPAL-AUTH-ALGO"),
        "cert_url": delivery.header("PAYPAL-CERT-URL"),
        "transmission_id": delivery.header("PAYPAL-TRANSMISSION-ID"),
        "transmission_sig": delivery.header("PAYPAL-TRANSMISSION-SIG"),
        "transmission_time": delivery.header("PAYPAL-TRANSMISSION-TIME"),
        "webhook_id": WEBHOOK_ID,
        "webhook_event": delivery.event,
        **override,
    }
    response = httpx.post(
        f"{paypal_url}/v1/notifications/verify-webhook-signature",
        json=body,
        headers={"Authorization": f"Bearer {_token(paypal_url)}"},
    )
    response.raise_for_status()
    return str(response.json()["verification_status"])


def test_capture_flow_events_arrive_signed_and_verify(
    paypal_url: str, paypal: PaypalServersdkClient, paypal_receiver: ProviderReceiver
) -> None:
    order = approved_order(paypal, "25.00")
    approved = paypal_receiver.wait_about(order.id, "CHECKOUT.ORDER.APPROVED")[0]
    assert approved.event["resource_type"] == "checkout-order"
    assert approved.event["resource"]["status"] == "APPROVED"
    assert approved.event["id"].startswith("WH-")

    captured = paypal.orders.capture_order({"id": order.id}).body
    capture_id = captured.purchase_units[0].payments.captures[0].id
    delivery = paypal_receiver.wait_about(capture_id, "PAYMENT.CAPTURE.COMPLETED")[0]
    resource = delivery.event["resource"]
    assert resource["amount"] == {"currency_code": "USD", "value": "25.00"}
    assert resource["supplementary_data"]["related_ids"]["order_id"] == order.id
    assert _verify(paypal_url, delivery) == "SUCCESS"
    assert _verify(paypal_url, approved) == "SUCCESS"

    # The signature is documented: base64 HMAC-SHA256 over id|time|webhook id|crc32(body).
    crc = zlib.crc32(delivery.body) & 0xFFFFFFFF
    message = "|".join(
        [
            delivery.header("PAYPAL-TRANSMISSION-ID"),
            delivery.header("PAYPAL-TRANSMISSION-TIME"),
            WEBHOOK_ID,
            str(crc),
        ]
    )
    expected = base64.b64encode(
        hmac.new(WEBHOOK_SECRET.encode(), message.encode(), hashlib.sha256).digest()
    ).decode()
    assert delivery.header("PAYPAL-TRANSMISSION-SIG") == expected

    # The event can be fetched back by id.
    fetched = httpx.get(
        f"{paypal_url}/v1/notifications/webhooks-events/{delivery.event['id']}",
        headers={"Authorization": f"Bearer {_token(paypal_url)}"},
    ).json()
    assert fetched == delivery.event


def test_forged_or_altered_deliveries_fail_verification(
    paypal_url: str, paypal: PaypalServersdkClient, paypal_receiver: ProviderReceiver
) -> None:
    order = approved_order(paypal, "31.00")
    delivery = paypal_receiver.wait_about(order.id, "CHECKOUT.ORDER.APPROVED")[0]
    forged = base64.b64encode(b"x" * 32).decode()
    assert _verify(paypal_url, delivery, transmission_sig=forged) == "FAILURE"
    altered = json.loads(delivery.body)
    altered["resource"]["purchase_units"][0]["amount"]["value"] = "0.01"
    assert _verify(paypal_url, delivery, webhook_event=altered) == "FAILURE"
    assert _verify(paypal_url, delivery, transmission_time="2020-01-01T00:00:00Z") == "FAILURE"
    unknown = httpx.post(
        f"{paypal_url}/v1/notifications/verify-webhook-signature",
        json={
            "auth_algo": "HMACSHA256",
            "cert_url": "x",
            "transmission_id": "a1",
            "transmission_sig": "a1",
            "transmission_time": "2026-01-01T00:00:00Z",
            "webhook_id": "NOPE",
            "webhook_event": {},
        },
        headers={"Authorization": f"Bearer {_token(paypal_url)}"},
    )
    assert unknown.status_code == 404


def test_authorization_void_and_refund_events(
    paypal: PaypalServersdkClient, paypal_receiver: ProviderReceiver
) -> None:
    order = approved_order(paypal, "45.00", intent="AUTHORIZE")
    auth = (
        paypal.orders.authorize_order({"id": order.id})
        .body.purchase_units[0]
        .payments.authorizations[0]
    )
    created = paypal_receiver.wait_about(auth.id, "PAYMENT.AUTHORIZATION.CREATED")[0]
    assert created.event["resource"]["status"] == "CREATED"
    paypal.payments.void_payment({"authorization_id": auth.id})
    voided = paypal_receiver.wait_about(auth.id, "PAYMENT.AUTHORIZATION.VOIDED")[0]
    assert voided.event["resource"]["status"] == "VOIDED"

    order = approved_order(paypal, "15.00")
    capture = (
        paypal.orders.capture_order({"id": order.id}).body.purchase_units[0].payments.captures[0]
    )
    refund = paypal.payments.refund_captured_payment({"capture_id": capture.id}).body
    refunded = paypal_receiver.wait_about(refund.id, "PAYMENT.CAPTURE.REFUNDED")[0]
    assert refunded.event["resource_type"] == "refund"
    assert refunded.event["resource"]["amount"]["value"] == "15.00"


def test_denied_and_pending_capture_events(
    paypal: PaypalServersdkClient, paypal_admin: KitAdmin, paypal_receiver: ProviderReceiver
) -> None:
    order = approved_order(paypal, "11.00", funding="denied")
    denied = (
        paypal.orders.capture_order({"id": order.id}).body.purchase_units[0].payments.captures[0]
    )
    paypal_receiver.wait_about(denied.id, "PAYMENT.CAPTURE.DENIED")
    order = approved_order(paypal, "12.00", funding="pending")
    pending = (
        paypal.orders.capture_order({"id": order.id}).body.purchase_units[0].payments.captures[0]
    )
    paypal_receiver.wait_about(pending.id, "PAYMENT.CAPTURE.PENDING")
    paypal_admin.call("POST", f"/_sandbox/captures/{pending.id}/settle", {"outcome": "DECLINED"})
    paypal_receiver.wait_about(pending.id, "PAYMENT.CAPTURE.DENIED")


def test_failed_deliveries_are_retried_until_2xx(
    paypal: PaypalServersdkClient, paypal_admin: KitAdmin, paypal_receiver: ProviderReceiver
) -> None:
    order = approved_order(paypal, "14.00", intent="AUTHORIZE")
    auth = (
        paypal.orders.authorize_order({"id": order.id})
        .body.purchase_units[0]
        .payments.authorizations[0]
    )
    paypal_receiver.wait_about(auth.id, "PAYMENT.AUTHORIZATION.CREATED")
    paypal_receiver.fail(auth.id, 500, 503)
    paypal.payments.void_payment({"authorization_id": auth.id})
    tries = paypal_receiver.wait_about(auth.id, "PAYMENT.AUTHORIZATION.VOIDED", count=3)
    assert [d.answered for d in tries] == [500, 503, 200]
    assert len({d.event["id"] for d in tries}) == 1
    assert len({d.body for d in tries}) == 1  # the same bytes every attempt
    # Each attempt is a new transmission with its own id and signature.
    assert len({d.header("PAYPAL-TRANSMISSION-ID") for d in tries}) == 3
    (record,) = paypal_admin.wait_for_deliveries(tries[0].event["id"])
    assert record["status"] == "succeeded"
    assert [a["status_code"] for a in record["attempts"]] == [500, 503, 200]
    assert len(record["attempts"]) <= MAX_ATTEMPTS


def test_webhook_drop_and_duplicate_faults(
    paypal: PaypalServersdkClient, paypal_admin: KitAdmin, paypal_receiver: ProviderReceiver
) -> None:
    paypal_admin.add_fault("webhook_drop", count=1, event_type="CHECKOUT.ORDER.APPROVED")
    dropped = approved_order(paypal, "16.00")
    paypal_admin.add_fault("webhook_duplicate", times=3, count=1, event_type="PAYMENT.CAPTURE.*")
    capture = (
        paypal.orders.capture_order({"id": dropped.id}).body.purchase_units[0].payments.captures[0]
    )
    copies = paypal_receiver.wait_about(capture.id, "PAYMENT.CAPTURE.COMPLETED", count=3)
    assert len({c.event["id"] for c in copies}) == 1  # one event, three deliveries
    assert paypal_receiver.about(dropped.id, "CHECKOUT.ORDER.APPROVED") == []
    records = [
        r
        for r in paypal_admin.deliveries(event_type="CHECKOUT.ORDER.APPROVED")
        if r["object_id"] == dropped.id
    ]
    assert [r["status"] for r in records] == ["dropped"]


def test_webhook_reorder_fault_delivers_newest_first(
    paypal: PaypalServersdkClient, paypal_admin: KitAdmin, paypal_receiver: ProviderReceiver
) -> None:
    order = approved_order(paypal, "17.00", intent="AUTHORIZE")
    paypal_admin.add_fault("webhook_reorder", count=2, event_type="PAYMENT.AUTHORIZATION.*")
    auth = (
        paypal.orders.authorize_order({"id": order.id})
        .body.purchase_units[0]
        .payments.authorizations[0]
    )
    paypal.payments.void_payment({"authorization_id": auth.id})
    paypal_receiver.wait_about(auth.id, "PAYMENT.AUTHORIZATION.CREATED")
    types = [d.event_type for d in paypal_receiver.about(auth.id)]
    assert types == ["PAYMENT.AUTHORIZATION.VOIDED", "PAYMENT.AUTHORIZATION.CREATED"]


def test_a_dashboard_refund_sends_the_apis_refund_event(
    paypal_url: str, paypal: PaypalServersdkClient, paypal_receiver: ProviderReceiver
) -> None:
    """A refund made in PayPal's dashboard (the admin route) is the API's refund: the same
    signed PAYMENT.CAPTURE.REFUNDED whose resource is the refund, its `up` link the capture,
    with no `custom_id`; the order lists it, and GET /v2/payments/refunds/{id} reads it."""
    order = approved_order(paypal, "30.00")
    capture = (
        paypal.orders.capture_order({"id": order.id}).body.purchase_units[0].payments.captures[0]
    )
    refund_url = f"{paypal_url}/_sandbox/captures/{capture.id}/refund"
    answer = httpx.post(refund_url, json={"amount_minor": 1_250})
    assert answer.status_code == 200, answer.text
    made = answer.json()
    assert (made["status"], made["amount"]["value"]) == ("COMPLETED", "12.50")
    assert "custom_id" not in made
    refunded = paypal_receiver.wait_about(made["id"], "PAYMENT.CAPTURE.REFUNDED")[0]
    assert _verify(paypal_url, refunded) == "SUCCESS"
    resource = refunded.event["resource"]
    assert refunded.event["resource_type"] == "refund"
    up = next(link["href"] for link in resource["links"] if link["rel"] == "up")
    assert up.endswith(f"/v2/payments/captures/{capture.id}")
    listed = paypal.orders.get_order({"id": order.id}).body.purchase_units[0].payments.refunds
    assert [r.id for r in listed] == [made["id"]]
    assert paypal.payments.get_refund({"refund_id": made["id"]}).body.amount.value == "12.50"
    related = paypal.payments.get_captured_payment({"capture_id": capture.id}).body
    assert related.supplementary_data.related_ids.order_id == order.id
    # The rest, then nothing more: refused as the API refuses it.
    assert httpx.post(refund_url, json={}).status_code == 200
    again = httpx.post(refund_url, json={"amount_minor": 1})
    assert again.status_code == 409 and "CAPTURE_FULLY_REFUNDED" in again.text
