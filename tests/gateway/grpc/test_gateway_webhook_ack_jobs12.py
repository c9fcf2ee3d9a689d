"""A relayed webhook delivery is answered with WebhookAck's JSON, the duplicate flag as payments
said (issue 13: the two answers are written once, not a model per delivery): the bytes FastAPI's
response model writes, for a first delivery and for one payments had applied already."""

from __future__ import annotations

import httpx
import pytest

from gateway.api.models import WebhookAck
from hirepay.payments.v1 import payments_service_pb2 as pay_pb
from tests.support.gateway_harness import Backends

_EVENT = b'{"id": "evt_ack", "type": "payment_intent.succeeded"}'


@pytest.mark.parametrize("duplicate", [False, True])
@pytest.mark.parametrize("provider", ["stripe", "razorpay"])
async def test_a_relayed_delivery_is_acknowledged_with_payments_duplicate_flag(
    client: httpx.AsyncClient, backends: Backends, duplicate: bool, provider: str
) -> None:
    backends.payments.on(
        "HandleProviderEvent",
        pay_pb.HandleProviderEventResponse(event_id="evt_ack", applied=True, duplicate=duplicate),
    )
    signing = {"stripe": "Stripe-Signature", "razorpay": "X-Razorpay-Signature"}[provider]
    resp = await client.post(
        f"/api/payments/webhook/{provider}",
        content=_EVENT,
        headers={signing: "t=1,v1=ab", "Content-Type": "application/json"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert resp.content == WebhookAck(received=True, duplicate=duplicate).model_dump_json().encode()
    assert resp.json() == {"received": True, "duplicate": duplicate}
    [call] = backends.payments.calls_to("HandleProviderEvent")
    assert call.request.payload == _EVENT
