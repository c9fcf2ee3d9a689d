"""Customers: create, retrieve, update (metadata merge), list by email, delete, events."""

from __future__ import annotations

import uuid

import pytest
import stripe

from tests.support.webhook_receiver import WebhookReceiver


def test_customer_lifecycle(sync_client: stripe.StripeClient, receiver: WebhookReceiver) -> None:
    email = f"{uuid.uuid4().hex[:8]}@hirepay.test"
    customer = sync_client.v1.customers.create(
        params={"email": email, "name": "Acme Hiring", "metadata": {"company_id": "co_1"}}
    )
    assert customer.id.startswith("cus_")
    assert (customer.object, customer.email, customer.name) == ("customer", email, "Acme Hiring")
    assert customer.livemode is False and isinstance(customer.created, int)

    updated = sync_client.v1.customers.update(
        customer.id, params={"name": "Acme", "metadata": {"plan": "growth"}}
    )
    assert updated.name == "Acme"
    assert updated.metadata.to_dict() == {"company_id": "co_1", "plan": "growth"}
    event = receiver.wait_about(customer.id, "customer.updated")[0].event
    assert event["data"]["previous_attributes"]["name"] == "Acme Hiring"

    sync_client.v1.customers.create(params={"email": f"other-{email}"})
    by_email = sync_client.v1.customers.list(params={"email": email})
    assert [c.id for c in by_email.data] == [customer.id]

    deleted = sync_client.v1.customers.delete(customer.id)
    assert deleted.deleted is True
    receiver.wait_about(customer.id, "customer.deleted")
    with pytest.raises(stripe.InvalidRequestError) as raised:
        sync_client.v1.customers.retrieve(customer.id)
    assert raised.value.http_status == 404


def test_unknown_customer_on_an_intent(sync_client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        sync_client.v1.payment_intents.create(
            params={"amount": 1000, "currency": "usd", "customer": "cus_nobody"}
        )
    assert (raised.value.code, raised.value.param, raised.value.http_status) == (
        "resource_missing",
        "customer",
        400,
    )


def test_unrecognized_url(sync_client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        sync_client.raw_request("get", "/v1/not_a_resource")
    assert raised.value.http_status == 404
    assert "Unrecognized request URL" in raised.value.user_message
