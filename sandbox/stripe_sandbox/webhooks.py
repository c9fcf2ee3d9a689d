"""Stripe's webhook wire format on the kit's dispatcher (`sandbox_kit.webhooks`: the scheduled
worker pool, retries, faults): endpoints are the store's `webhook_endpoint` objects, Connect
endpoints get connected accounts' events, deliveries carry `Stripe-Signature`, and an event's
`pending_webhooks` counts down as its deliveries settle."""

from __future__ import annotations

import hashlib
import hmac
import time

from sandbox_kit.background import Background
from sandbox_kit.faults import FaultRegistry
from sandbox_kit.jsondata import dumps_indented
from sandbox_kit.webhooks import (
    Delivery,
    Endpoint,
    WebhookDispatcher,
    WebhookEvent,
    WebhookSettings,
)
from stripe_sandbox.config import SandboxConfig
from stripe_sandbox.store import Store, StripeObject

USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header: `t=<unix>,v1=<hex HMAC-SHA256(secret, "t.payload")>`."""
    stamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{stamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def settings(config: SandboxConfig) -> WebhookSettings:
    return WebhookSettings(
        retry_base=config.webhook_retry_base,
        retry_max_delay=config.webhook_retry_max_delay,
        max_attempts=config.webhook_max_attempts,
        timeout=config.webhook_timeout,
        max_concurrency=config.webhook_concurrency,
    )


class StripeWebhooks:
    """Connects the store's events and endpoints to a kit dispatcher."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._views: tuple[int, list[Endpoint]] | None = None  # (the lock's turn, the views)

    def endpoints(self) -> list[Endpoint]:
        """The store's webhook endpoints as the dispatcher sees them.

        Built once per turn of the store's lock (its count of releases) and kept for the turn:
        endpoints change only while the lock is held, in operations that emit no event after the
        change, and an operation emits several events (a posting five, each asking for the
        endpoints: issue 13)."""
        turn = getattr(self.store.lock, "releases", None)
        if turn is not None and self._views is not None and self._views[0] == turn:
            return self._views[1]
        views = []
        for endpoint in self.store.all("webhook_endpoint"):
            meta = self.store.meta(endpoint["id"])
            views.append(
                Endpoint(
                    url=endpoint["url"],
                    secret=meta["secret"],
                    events=tuple(endpoint.get("enabled_events", [])),
                    id=endpoint["id"],
                    enabled=endpoint.get("status") == "enabled",
                    source=str(meta.get("source", "api")),
                    extra={"connect": bool(meta.get("connect"))},
                )
            )
        if turn is not None:
            self._views = (turn, views)
        return views

    @staticmethod
    def routes(endpoint: Endpoint, event: WebhookEvent) -> bool:
        # API-created endpoints follow Stripe: Connect endpoints get connected-account events,
        # account endpoints get the platform's. Configured (env/CLI) endpoints get both.
        if endpoint.source == "config":
            return True
        return bool(endpoint.extra.get("connect")) == (event.context.get("account") is not None)

    @staticmethod
    def sign(delivery: Delivery, attempt: int) -> dict[str, str]:
        return {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            "Stripe-Signature": sign(delivery.event.payload, delivery.endpoint.secret),
        }

    def settled(self, delivery: Delivery) -> None:
        """One endpoint is done with the event (2xx or given up): count it off."""
        event = self.store.objects.get("event", {}).get(delivery.event.id)
        if event is not None and delivery.copy == 1 and event.get("pending_webhooks", 0) > 0:
            event["pending_webhooks"] -= 1

    def publish(self, dispatcher: WebhookDispatcher, event: StripeObject) -> None:
        """A store listener: send the event, its `pending_webhooks` counting its endpoints."""
        view = WebhookEvent(
            event["id"],
            event["type"],
            "",
            object_id=event["data"]["object"].get("id"),
            context={"account": event.get("account")},
        )
        targets = dispatcher.targets(view)
        if not targets:
            return
        event["pending_webhooks"] = len(targets)
        sent = WebhookEvent(
            view.id, view.type, dumps_indented(event), view.object_id, context=view.context
        )
        dispatcher.publish(sent, targets)


def create_dispatcher(
    config: SandboxConfig, store: Store, faults: FaultRegistry, background: Background
) -> WebhookDispatcher:
    """The kit's dispatcher for the store's events, Stripe-signed."""
    stripe = StripeWebhooks(store)
    dispatcher = WebhookDispatcher(
        settings(config),
        faults,
        background,
        signer=stripe.sign,
        router=stripe.routes,
        on_settled=stripe.settled,
        endpoint_source=stripe.endpoints,
    )
    store.listeners.append(lambda event: stripe.publish(dispatcher, event))
    return dispatcher
