"""In-memory PayPal state: orders, authorizations, captures, refunds and webhook events, with
the webhook signature (and its verification) PayPal's verify endpoint answers for.

Every read and write happens under the kit lock; the functions in `orders.py` and
`payments.py` expect the caller to hold it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

from paypal_sandbox.config import PayPalConfig
from paypal_sandbox.errors import not_found, render_server_error
from sandbox_kit import ids
from sandbox_kit.runtime import Kit
from sandbox_kit.webhooks import Delivery, WebhookEvent

PayPalObject = dict[str, Any]

AUTH_ALGO = "HMACSHA256"  # real PayPal signs with SHA256withRSA; the sandbox with a shared secret
CERT_PATH = "/v1/notifications/certs/CERT-sandbox-hmac"

RESOURCE_TYPES = {
    "order": "checkout-order",
    "authorization": "authorization",
    "capture": "capture",
    "refund": "refund",
    "dispute": "dispute",
}


def paypal_id() -> str:
    """A 17-character id such as `5O190127TN364715T` (orders, authorizations, captures)."""
    return ids.random_token(17, ids.UPPER_DIGITS)


def signed_message(
    transmission_id: str, transmission_time: str, webhook_id: str, payload: str
) -> str:
    """What a delivery's signature covers, as PayPal documents it: transmission id, time,
    webhook id and the CRC32 of the exact body, joined by `|`."""
    crc = zlib.crc32(payload.encode()) & 0xFFFFFFFF
    return f"{transmission_id}|{transmission_time}|{webhook_id}|{crc}"


def signature(secret: str, message: str) -> str:
    """`PAYPAL-TRANSMISSION-SIG`: base64 HMAC-SHA256 of the signed message."""
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


@dataclass
class Transmission:
    """One signed POST of an event (each attempt is a new transmission)."""

    delivery: Delivery
    transmission_id: str
    transmission_time: str
    webhook_id: str


@dataclass
class PayPalState:
    """All PayPal objects plus the facts about them that are not part of their wire shape."""

    config: PayPalConfig
    kit: Kit = field(init=False)
    objects: dict[str, dict[str, PayPalObject]] = field(default_factory=dict)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, PayPalObject] = field(default_factory=dict)
    payloads: dict[str, str] = field(default_factory=dict)  # event id -> exact body sent
    tokens: dict[str, float] = field(default_factory=dict)  # access token -> expiry (unix)
    transmissions: dict[str, Transmission] = field(default_factory=dict)
    # The authorizations, captures and refunds of each order, oldest first: what an order shows
    # of its payments, without reading every one ever made (issue 13).
    order_objects: dict[str, list[str]] = field(default_factory=dict)
    base_url: str = ""  # of the last API request, for links in webhook events

    @classmethod
    def create(cls, config: PayPalConfig) -> PayPalState:
        state = cls(config)
        state.kit = Kit.create(config.kit, signer=state.sign, render_error=render_server_error)
        state.kit.register_configured_endpoints(
            config.kit.webhook_secret or "", webhook_id=config.webhook_id
        )
        state.kit.on_reset.append(state.reset)
        return state

    def reset(self) -> None:
        """Forget every object and event; access tokens stay valid (the SDK caches them)."""
        self.objects.clear()
        self.meta.clear()
        self.events.clear()
        self.payloads.clear()
        self.transmissions.clear()
        self.order_objects.clear()

    # -- objects ---------------------------------------------------------------------------

    def add(self, kind: str, obj: PayPalObject) -> PayPalObject:
        self.objects.setdefault(kind, {})[obj.get("id") or obj["dispute_id"]] = obj
        return obj

    def get(self, kind: str, object_id: str, field_name: str) -> PayPalObject:
        obj = self.objects.get(kind, {}).get(object_id)
        if obj is None:
            raise not_found(field_name, object_id)
        return obj

    def facts(self, object_id: str) -> dict[str, Any]:
        return self.meta.setdefault(object_id, {})

    def link(self, object_id: str, order_id: str | None, **facts: Any) -> None:
        """Record the order a new authorization, capture or refund belongs to, with `facts`."""
        self.facts(object_id).update(order_id=order_id, **facts)
        if order_id is not None:
            self.order_objects.setdefault(order_id, []).append(object_id)

    # -- events ----------------------------------------------------------------------------

    def emit(
        self, event_type: str, kind: str, resource: PayPalObject, summary: str
    ) -> PayPalObject:
        """Record a webhook event with a snapshot of `resource` and deliver it."""
        event_id = f"WH-{paypal_id()}-{paypal_id()}"
        base = self.base_url
        event: PayPalObject = {
            "id": event_id,
            "event_version": "1.0",
            "create_time": self.kit.clock.iso(),
            "resource_type": RESOURCE_TYPES[kind],
            "resource_version": "2.0",
            "event_type": event_type,
            "summary": summary,
            "resource": json.loads(json.dumps(resource)),
            "links": [
                {
                    "href": f"{base}/v1/notifications/webhooks-events/{event_id}",
                    "rel": "self",
                    "method": "GET",
                },
                {
                    "href": f"{base}/v1/notifications/webhooks-events/{event_id}/resend",
                    "rel": "resend",
                    "method": "POST",
                },
            ],
        }
        payload = json.dumps(event)
        self.events[event_id] = event
        self.payloads[event_id] = payload
        subject = str(resource.get("id") or resource.get("dispute_id"))  # a dispute's own id
        self.kit.webhooks.publish(WebhookEvent(event_id, event_type, payload, subject))
        return event

    def sign(self, delivery: Delivery, attempt: int) -> dict[str, str]:
        """The PAYPAL-* headers of one delivery attempt."""
        transmission_id = str(uuid.uuid1())
        transmission_time = self.kit.clock.iso()
        webhook_id = str(delivery.endpoint.extra.get("webhook_id") or delivery.endpoint.id)
        message = signed_message(
            transmission_id, transmission_time, webhook_id, delivery.event.payload
        )
        self.transmissions[transmission_id] = Transmission(
            delivery, transmission_id, transmission_time, webhook_id
        )
        return {
            "Content-Type": "application/json",
            "User-Agent": "PayPal/AUHD-214.0-58184848",
            "PAYPAL-TRANSMISSION-ID": transmission_id,
            "PAYPAL-TRANSMISSION-TIME": transmission_time,
            "PAYPAL-TRANSMISSION-SIG": signature(delivery.endpoint.secret, message),
            "PAYPAL-CERT-URL": f"{self.base_url}{CERT_PATH}",
            "PAYPAL-AUTH-ALGO": AUTH_ALGO,
        }

    def verify(self, body: dict[str, Any]) -> bool:
        """What `POST /v1/notifications/verify-webhook-signature` decides.

        The event is checked as the JSON PayPal sent (a changed event fails), against the secret
        of the webhook named by `webhook_id`.
        """
        endpoint = next(
            (
                e
                for e in self.kit.webhooks.endpoints.values()
                if str(e.extra.get("webhook_id") or e.id) == body["webhook_id"]
            ),
            None,
        )
        if endpoint is None:
            raise not_found("webhook_id", str(body["webhook_id"]))
        if body["auth_algo"] != AUTH_ALGO or not str(body["cert_url"]).endswith(CERT_PATH):
            return False
        event = body["webhook_event"]
        sent = self.payloads.get(str(event.get("id"))) if isinstance(event, dict) else None
        payload = sent if sent is not None and json.loads(sent) == event else json.dumps(event)
        message = signed_message(
            str(body["transmission_id"]),
            str(body["transmission_time"]),
            str(body["webhook_id"]),
            payload,
        )
        expected = signature(endpoint.secret, message)
        return hmac.compare_digest(expected, str(body["transmission_sig"]))
