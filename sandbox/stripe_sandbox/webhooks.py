"""Webhook delivery: Stripe-signed POSTs of events to endpoints, retried with exponential
backoff until a 2xx, with the webhook faults (drop, duplicate, reorder) applied."""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from stripe_sandbox import ids
from stripe_sandbox.background import Background
from stripe_sandbox.config import SandboxConfig
from stripe_sandbox.faults import (
    FaultRegistry,
    WebhookDropFault,
    WebhookDuplicateFault,
)
from stripe_sandbox.store import Store, StripeObject

log = logging.getLogger("stripe_sandbox.webhooks")

USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header: `t=<unix>,v1=<hex HMAC-SHA256(secret, "t.payload")>`."""
    stamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{stamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def endpoint_wants(endpoint: StripeObject, event: StripeObject) -> bool:
    """Whether an enabled endpoint subscribes to the event's type (`*` and globs allowed)."""
    if endpoint.get("status") != "enabled":
        return False
    return any(
        pattern == "*" or fnmatch.fnmatchcase(event["type"], pattern)
        for pattern in endpoint.get("enabled_events", [])
    )


@dataclass
class Attempt:
    """One POST of an event to an endpoint."""

    number: int
    at: float
    status_code: int | None
    error: str | None
    duration_ms: int

    def describe(self) -> dict[str, Any]:
        return {
            "attempt": self.number,
            "at": self.at,
            "status_code": self.status_code,
            "error": self.error,
            "duration_ms": self.duration_ms,
        }


@dataclass
class Delivery:
    """An event on its way to one endpoint: held, pending, succeeded, failed or dropped."""

    event: StripeObject
    payload: str  # the exact body, the same for every attempt and copy
    endpoint_id: str
    url: str
    secret: str
    copy: int = 1
    status: str = "pending"
    id: str = field(default_factory=lambda: ids.new_id("whdel"))
    attempts: list[Attempt] = field(default_factory=list)
    next_attempt_at: float | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event_id": self.event["id"],
            "event_type": self.event["type"],
            "endpoint_id": self.endpoint_id,
            "url": self.url,
            "copy": self.copy,
            "status": self.status,
            "attempts": [a.describe() for a in self.attempts],
            "next_attempt_at": self.next_attempt_at,
        }


class WebhookDispatcher:
    """Sends every new event to the endpoints that subscribe to it, in background tasks."""

    def __init__(
        self,
        config: SandboxConfig,
        store: Store,
        faults: FaultRegistry,
        background: Background,
    ) -> None:
        self.config = config
        self.store = store
        self.faults = faults
        self.background = background
        self.deliveries: list[Delivery] = []
        self._held: list[list[Delivery]] = []
        self._client: httpx.AsyncClient | None = None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def reset(self) -> None:
        self.deliveries.clear()
        self._held.clear()

    def describe(self, event_id: str | None = None, event_type: str | None = None) -> list[Any]:
        return [
            d.describe()
            for d in self.deliveries
            if (event_id is None or d.event["id"] == event_id)
            and (event_type is None or fnmatch.fnmatchcase(d.event["type"], event_type))
        ]

    # -- publishing (called by the store, under its lock) ----------------------------------

    def publish(self, event: StripeObject) -> None:
        targets = [
            endpoint
            for endpoint in self.store.all("webhook_endpoint")
            if endpoint_wants(endpoint, event) and self._routes(endpoint, event)
        ]
        if not targets:
            return
        event["pending_webhooks"] = len(targets)
        payload = json.dumps(event, indent=2)
        if self.faults.take_webhook(WebhookDropFault, event["type"]) is not None:
            for endpoint in targets:
                self.deliveries.append(
                    self._delivery(event, payload, endpoint, 1, status="dropped")
                )
            log.info("webhook fault: dropped %s %s", event["type"], event["id"])
            return
        duplicate = self.faults.take_webhook(WebhookDuplicateFault, event["type"])
        copies = duplicate.times if duplicate is not None else 1
        batch = [
            self._delivery(event, payload, endpoint, copy)
            for copy in range(1, copies + 1)
            for endpoint in targets
        ]
        self.deliveries.extend(batch)

        reorder = self.faults.reorder(event["type"])
        if reorder is not None:
            for delivery in batch:
                delivery.status = "held"
            self._held.append(batch)
            reorder.fired += 1
            if reorder.remaining is not None and len(self._held) >= reorder.remaining:
                self.faults.remove(reorder.id)
                self.release_held()
            return
        for delivery in batch:
            self._start(delivery)

    def release_held(self) -> int:
        """Send every held event, newest first (the reorder fault)."""
        held, self._held = self._held, []
        ordered = [delivery for batch in reversed(held) for delivery in batch]
        for delivery in ordered:
            delivery.status = "pending"
        if ordered:
            self.background.spawn(self._deliver_in_order(ordered), name="webhooks reordered")
        return len(ordered)

    def flush(self) -> int:
        """Release held events and disarm the reorder faults."""
        while (reorder := self.faults.reorder()) is not None:
            self.faults.remove(reorder.id)
        return self.release_held()

    def _routes(self, endpoint: StripeObject, event: StripeObject) -> bool:
        # API-created endpoints follow Stripe: Connect endpoints get connected-account events,
        # account endpoints get the platform's. Configured (env/CLI) endpoints get both.
        meta = self.store.meta(endpoint["id"])
        if meta.get("source") == "config":
            return True
        return bool(meta.get("connect")) == ("account" in event)

    def _delivery(
        self,
        event: StripeObject,
        payload: str,
        endpoint: StripeObject,
        copy: int,
        status: str = "pending",
    ) -> Delivery:
        return Delivery(
            event=event,
            payload=payload,
            endpoint_id=endpoint["id"],
            url=endpoint["url"],
            secret=self.store.meta(endpoint["id"])["secret"],
            copy=copy,
            status=status,
        )

    def _start(self, delivery: Delivery) -> None:
        self.background.spawn(self._deliver(delivery), name=f"webhook {delivery.id}")

    # -- delivery (background) -------------------------------------------------------------

    async def _deliver(self, delivery: Delivery, number: int = 1) -> None:
        """Attempt `number` and the retries after it, with exponential backoff."""
        while not await self._try(delivery, number):
            if number >= self.config.webhook_max_attempts:
                self._give_up(delivery)
                return
            await self._wait_before_retry(delivery, number)
            number += 1

    async def _deliver_in_order(self, deliveries: list[Delivery]) -> None:
        """First attempts one after the other, so that the receiver sees this order; retries
        continue independently."""
        for delivery in deliveries:
            if await self._try(delivery, 1):
                continue
            if self.config.webhook_max_attempts <= 1:
                self._give_up(delivery)
            else:
                self.background.spawn(self._retry(delivery), name=f"webhook {delivery.id}")

    async def _retry(self, delivery: Delivery) -> None:
        await self._wait_before_retry(delivery, 1)
        await self._deliver(delivery, 2)

    async def _wait_before_retry(self, delivery: Delivery, number: int) -> None:
        config = self.config
        delay = min(config.webhook_retry_base * 2 ** (number - 1), config.webhook_retry_max_delay)
        delivery.next_attempt_at = time.time() + delay
        await asyncio.sleep(delay)
        delivery.next_attempt_at = None

    async def _try(self, delivery: Delivery, number: int) -> bool:
        """One attempt, recorded; True when the endpoint answered 2xx."""
        attempt = await self._attempt(delivery, number)
        delivery.attempts.append(attempt)
        if attempt.status_code is not None and 200 <= attempt.status_code < 300:
            delivery.status = "succeeded"
            self._settled(delivery)
            return True
        return False

    def _give_up(self, delivery: Delivery) -> None:
        delivery.status = "failed"
        self._settled(delivery)
        log.warning(
            "webhook %s for %s gave up after %d attempts",
            delivery.event["type"],
            delivery.url,
            len(delivery.attempts),
        )

    async def _attempt(self, delivery: Delivery, number: int) -> Attempt:
        if self._client is None:
            self._client = httpx.AsyncClient()
        started = time.time()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            "Stripe-Signature": sign(delivery.payload, delivery.secret),
        }
        status_code: int | None = None
        error: str | None = None
        try:
            response = await self._client.post(
                delivery.url,
                content=delivery.payload.encode(),
                headers=headers,
                timeout=self.config.webhook_timeout,
            )
            status_code = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        duration = int((time.time() - started) * 1000)
        log.info(
            "webhook %s %s -> %s attempt %d: %s",
            delivery.event["type"],
            delivery.event["id"],
            delivery.url,
            number,
            status_code or error,
        )
        return Attempt(number, started, status_code, error, duration)

    def _settled(self, delivery: Delivery) -> None:
        pending = delivery.event.get("pending_webhooks", 0)
        if delivery.copy == 1 and pending > 0:
            delivery.event["pending_webhooks"] = pending - 1
