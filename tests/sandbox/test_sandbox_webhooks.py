"""Webhooks: Stripe signatures checked with the SDK, retries with backoff until 2xx, giving up,
API-created endpoints with their own secret, and the drop/duplicate/reorder faults; events API."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import stripe

from hirepay_dev.procs import free_port
from hirepay_dev.sandbox_client import SandboxAdmin
from tests.support.stripe_settings import MAX_ATTEMPTS, WEBHOOK_SECRET
from tests.support.webhook_receiver import WebhookReceiver

# Delivery states with no attempt to come (a held one waits for a flush).
_FINAL = ("succeeded", "failed", "dropped")


def _settled(
    admin: SandboxAdmin,
    event_id: str,
    which: Callable[[dict[str, Any]], bool] = lambda d: True,
    timeout: float = 10.0,
) -> list[dict[str, Any]]:
    """The event's deliveries (`which` of them) once none has an attempt to come.

    The sandbox records every delivery of an event (each copy, each endpoint) when it publishes
    it, and each attempt after the endpoint answered: once all are final, no POST is on its way.
    """
    deadline = time.monotonic() + timeout
    while True:
        deliveries = [d for d in admin.deliveries(event_id=event_id) if which(d)]
        if deliveries and all(d["status"] in _FINAL for d in deliveries):
            return deliveries
        if time.monotonic() > deadline:
            raise AssertionError(f"deliveries of {event_id} not settled: {deliveries}")
        time.sleep(0.02)


def _customer(client: stripe.StripeClient, **params: str) -> stripe.Customer:
    email = params.pop("email", f"{uuid.uuid4().hex[:8]}@hirepay.test")
    customer: stripe.Customer = client.v1.customers.create(params={"email": email, **params})  # type: ignore[arg-type]
    return customer


def test_deliveries_are_signed_like_stripe(
    sync_client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    customer = _customer(sync_client, name="Signed Co")
    delivery = receiver.wait_about(customer.id, "customer.created")[0]
    assert delivery.headers["Content-Type"].startswith("application/json")
    assert delivery.headers["User-Agent"].startswith("Stripe/1.0")
    signature = delivery.headers["Stripe-Signature"]
    assert signature.startswith("t=") and ",v1=" in signature

    event = stripe.Webhook.construct_event(delivery.body, signature, WEBHOOK_SECRET)
    assert event.id.startswith("evt_")
    assert (event.type, event.object, event.livemode) == ("customer.created", "event", False)
    assert event.data.object.id == customer.id
    assert event.data.object.name == "Signed Co"
    assert event.request.id.startswith("req_")
    assert abs(int(signature.split(",")[0][2:]) - time.time()) < 60

    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(delivery.body + b" ", signature, WEBHOOK_SECRET)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(delivery.body, signature, "whsec_wrong")

    same = sync_client.v1.events.retrieve(event.id)
    assert (same.type, same.data.object.id) == ("customer.created", customer.id)


def test_retried_with_backoff_until_2xx(
    sync_client: stripe.StripeClient, receiver: WebhookReceiver, admin: SandboxAdmin
) -> None:
    email = f"{uuid.uuid4().hex[:8]}@hirepay.test"
    customer = _customer(sync_client, email=email)
    # A 2xx to the same URL while a retry waits makes it due at once (the endpoint recovered):
    # the customer.created delivery is done before the failures start, so the backoff shows.
    created = receiver.wait_about(customer.id, "customer.created")
    _settled(admin, created[0].event["id"])
    receiver.fail(customer.id, 500, 503, event_type="customer.updated")
    sync_client.v1.customers.update(customer.id, params={"name": "Retry Co"})
    received = receiver.wait_about(customer.id, "customer.updated", count=3)
    assert [r.answered for r in received] == [500, 503, 200]
    assert len({r.event["id"] for r in received}) == 1  # the same event each time
    assert received[0].body == received[2].body

    # The receiver records a POST before answering it; the sandbox records the answer after.
    delivery = _settled(admin, received[0].event["id"])[0]
    assert delivery["status"] == "succeeded"
    attempts = delivery["attempts"]
    assert [a["status_code"] for a in attempts] == [500, 503, 200]
    # Exponential backoff from the 0.05 s base (conftest), each delay jittered by +-25 %.
    assert attempts[1]["at"] - attempts[0]["at"] >= 0.05 * 0.75
    assert attempts[2]["at"] - attempts[1]["at"] >= 0.1 * 0.75
    event = sync_client.v1.events.retrieve(received[0].event["id"])
    assert event.data.previous_attributes.name is None
    assert event.pending_webhooks == 0


def test_gives_up_after_the_maximum_attempts(
    sync_client: stripe.StripeClient, receiver: WebhookReceiver, admin: SandboxAdmin
) -> None:
    customer = _customer(sync_client)
    receiver.fail(customer.id, *([500] * (MAX_ATTEMPTS + 3)), event_type="customer.updated")
    sync_client.v1.customers.update(customer.id, params={"name": "Never Co"})
    received = receiver.wait_about(customer.id, "customer.updated", count=MAX_ATTEMPTS)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        delivery = admin.deliveries(event_id=received[0].event["id"])[0]
        if delivery["status"] == "failed":
            break
        time.sleep(0.05)
    assert delivery["status"] == "failed"
    assert len(delivery["attempts"]) == MAX_ATTEMPTS
    # "failed" is final and each attempt is recorded after the receiver answered it.
    assert len(receiver.about(customer.id, "customer.updated")) == MAX_ATTEMPTS


def test_api_created_endpoint_has_its_own_secret_and_event_filter(
    sync_client: stripe.StripeClient, receiver: WebhookReceiver, admin: SandboxAdmin
) -> None:
    url = receiver.url.replace("/webhooks", "/api-endpoint")
    endpoint = sync_client.v1.webhook_endpoints.create(
        params={"url": url, "enabled_events": ["customer.created"], "description": "api"}
    )
    try:
        assert endpoint.id.startswith("we_")
        assert endpoint.secret.startswith("whsec_")
        assert endpoint.status == "enabled"
        assert "secret" not in sync_client.v1.webhook_endpoints.retrieve(endpoint.id)

        customer = _customer(sync_client)
        sync_client.v1.customers.update(customer.id, params={"name": "Only created"})
        mine = receiver.wait_for(lambda r: r.path == "/api-endpoint" and r.object_id == customer.id)
        assert mine[0].type == "customer.created"
        stripe.Webhook.construct_event(
            mine[0].body, mine[0].headers["Stripe-Signature"], endpoint.secret
        )
        with pytest.raises(stripe.SignatureVerificationError):
            stripe.Webhook.construct_event(
                mine[0].body, mine[0].headers["Stripe-Signature"], WEBHOOK_SECRET
            )
        updated = receiver.wait_about(
            customer.id, "customer.updated"
        )  # the configured URL gets all
        _settled(admin, updated[0].event["id"])
        created = receiver.about(customer.id, "customer.created")[0].event["id"]
        _settled(admin, created)
        api_types = [r.type for r in receiver.about(customer.id) if r.path == "/api-endpoint"]
        assert api_types == ["customer.created"]
    finally:
        deleted = sync_client.v1.webhook_endpoints.delete(endpoint.id)
        assert deleted.deleted is True


def test_unreachable_endpoint_records_connection_errors(
    sync_client: stripe.StripeClient, admin: SandboxAdmin
) -> None:
    endpoint = sync_client.v1.webhook_endpoints.create(
        params={
            "url": f"http://127.0.0.1:{free_port()}/nobody",
            "enabled_events": ["customer.created"],
        }
    )
    try:
        customer = _customer(sync_client)
        event = sync_client.v1.events.list(params={"type": "customer.created", "limit": 1}).data[0]
        assert event.data.object.id == customer.id
        mine = _settled(admin, event.id, lambda d: d["endpoint_id"] == endpoint.id)
        assert mine[0]["attempts"][0]["status_code"] is None
        assert "ConnectError" in mine[0]["attempts"][0]["error"]
    finally:
        sync_client.v1.webhook_endpoints.delete(endpoint.id)


def test_webhook_drop(
    sync_client: stripe.StripeClient, receiver: WebhookReceiver, admin: SandboxAdmin
) -> None:
    admin.add_fault("webhook_drop", count=1, event_type="customer.created")
    lost = _customer(sync_client)
    kept = _customer(sync_client)
    receiver.wait_about(kept.id, "customer.created")
    event = sync_client.v1.events.list(params={"type": "customer.created", "limit": 2}).data[1]
    assert event.data.object.id == lost.id  # the event exists; only its webhook was lost
    assert _settled(admin, event.id)[0]["status"] == "dropped"
    assert receiver.about(lost.id, "customer.created") == []


def test_webhook_duplicate(
    sync_client: stripe.StripeClient, receiver: WebhookReceiver, admin: SandboxAdmin
) -> None:
    admin.add_fault("webhook_duplicate", times=3, count=1, event_type="customer.created")
    customer = _customer(sync_client)
    copies = receiver.wait_about(customer.id, "customer.created", count=3)
    assert len({c.event["id"] for c in copies}) == 1
    assert len({c.body for c in copies}) == 1
    for copy in copies:
        stripe.Webhook.construct_event(copy.body, copy.headers["Stripe-Signature"], WEBHOOK_SECRET)
    _settled(admin, copies[0].event["id"])
    assert len(receiver.about(customer.id, "customer.created")) == 3


def test_webhook_reorder_by_count(
    sync_client: stripe.StripeClient, receiver: WebhookReceiver, admin: SandboxAdmin
) -> None:
    admin.add_fault("webhook_reorder", count=3, event_type="customer.created")
    customers = [_customer(sync_client) for _ in range(3)]
    ids = {c.id for c in customers}
    arrived = receiver.wait_for(lambda r: r.object_id in ids, count=3)
    assert [r.object_id for r in arrived] == [c.id for c in reversed(customers)]
    assert admin.faults() == []


def test_webhook_reorder_until_flushed(
    sync_client: stripe.StripeClient, receiver: WebhookReceiver, admin: SandboxAdmin
) -> None:
    admin.add_fault("webhook_reorder", event_type="customer.created")
    first, second = _customer(sync_client), _customer(sync_client)
    # Both created events are recorded, held, when the API answers: nothing is on its way.
    events = sync_client.v1.events.list(params={"type": "customer.created", "limit": 2}).data
    assert {e.data.object.id for e in events} == {first.id, second.id}
    for event in events:
        assert [d["status"] for d in admin.deliveries(event_id=event.id)] == ["held"]
    assert receiver.about(first.id) == [] and receiver.about(second.id) == []
    assert admin.flush_webhooks() == 2
    arrived = receiver.wait_for(lambda r: r.object_id in {first.id, second.id}, count=2)
    assert [r.object_id for r in arrived] == [second.id, first.id]


def test_events_list_filters(sync_client: stripe.StripeClient) -> None:
    customer = _customer(sync_client)
    sync_client.v1.customers.update(customer.id, params={"metadata": {"k": "v"}})
    updated = sync_client.v1.events.list(params={"type": "customer.updated", "limit": 1}).data[0]
    assert updated.data.object.metadata.k == "v"
    assert updated.data.previous_attributes.metadata.to_dict() == {}
    several = sync_client.v1.events.list(
        params={"types": ["customer.created", "customer.updated"], "limit": 2}
    )
    assert [e.type for e in several.data] == ["customer.updated", "customer.created"]
    after = sync_client.v1.events.list(params={"created": {"gt": updated.created + 10_000}})
    assert after.data == []
    with pytest.raises(stripe.InvalidRequestError):
        sync_client.v1.events.retrieve("evt_missing")
