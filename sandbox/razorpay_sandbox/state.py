"""In-memory Razorpay state: orders, payments and refunds, the events Razorpay sends as
webhooks (signed `X-Razorpay-Signature`) and the payment signature Checkout returns.

Every read and write happens under the kit lock; `resources.py` expects the caller to hold it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from razorpay_sandbox.config import RazorpayConfig
from razorpay_sandbox.errors import not_found, render_server_error
from sandbox_kit import ids
from sandbox_kit.jsondata import copy_json
from sandbox_kit.runtime import Kit
from sandbox_kit.webhooks import Delivery, WebhookEvent

Entity = dict[str, Any]


def razorpay_id(prefix: str) -> str:
    """`order_`, `pay_`, `rfnd_`, `evt_` + 14 letters and digits, as Razorpay's ids look."""
    return f"{prefix}_{ids.random_token(14)}"


def hmac_hex(secret: str, message: str | bytes) -> str:
    data = message.encode() if isinstance(message, str) else message
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def payment_signature(key_secret: str, order_id: str, payment_id: str) -> str:
    """What Checkout hands back as `razorpay_signature`: HMAC-SHA256(order_id|payment_id)."""
    return hmac_hex(key_secret, f"{order_id}|{payment_id}")


@dataclass
class RazorpayState:
    """All Razorpay entities plus facts about them that are not part of their wire shape."""

    config: RazorpayConfig
    kit: Kit = field(init=False)
    entities: dict[str, dict[str, Entity]] = field(default_factory=dict)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def create(cls, config: RazorpayConfig) -> RazorpayState:
        state = cls(config)
        state.kit = Kit.create(config.kit, signer=state.sign, render_error=render_server_error)
        state.kit.register_configured_endpoints(config.kit.webhook_secret or "")
        state.kit.on_reset.append(state.reset)
        return state

    def reset(self) -> None:
        self.entities.clear()
        self.meta.clear()

    def add(self, kind: str, entity: Entity) -> Entity:
        self.entities.setdefault(kind, {})[entity["id"]] = entity
        return entity

    def get(self, kind: str, entity_id: str) -> Entity:
        entity = self.entities.get(kind, {}).get(entity_id)
        if entity is None:
            raise not_found()
        return entity

    def all(self, kind: str) -> list[Entity]:
        return list(self.entities.get(kind, {}).values())

    def facts(self, entity_id: str) -> dict[str, Any]:
        return self.meta.setdefault(entity_id, {})

    # -- webhooks --------------------------------------------------------------------------

    def emit(self, event_type: str, **entities: Entity) -> None:
        """Send a Razorpay event whose payload holds a snapshot of each named entity."""
        event_id = razorpay_id("evt")
        body = {
            "entity": "event",
            "account_id": self.config.account_id,
            "event": event_type,
            "contains": list(entities),
            "payload": {name: {"entity": copy_json(e)} for name, e in entities.items()},
            "created_at": self.kit.clock.now(),
        }
        subject = next(iter(entities.values()))["id"]
        self.kit.webhooks.publish(WebhookEvent(event_id, event_type, json.dumps(body), subject))

    def sign(self, delivery: Delivery, attempt: int) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "User-Agent": "Razorpay-Webhook/v1",
            "X-Razorpay-Event-Id": delivery.event.id,
            "X-Razorpay-Signature": hmac_hex(delivery.endpoint.secret, delivery.event.payload),
        }
