"""Webhook delivery: Stripe-signed POSTs of events to endpoints, retried with exponential
backoff until a 2xx, with the webhook faults (drop, duplicate, reorder) applied.

Deliveries wait in one schedule (a heap by due time) served by a fixed pool of workers, each
holding at most one connection of an HTTP client sized to the pool: a flood of events or a slow
receiver makes the backlog longer, never the number of requests in flight, so the client's
connection pool cannot run dry (the jam seen with one task per delivery: PoolTimeout on every
attempt, retries in lockstep, never recovering). Retry delays are jittered; when an endpoint that
was failing answers 2xx again, the deliveries waiting to retry to it are due at once, so the
backlog drains as soon as the receiver is back."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import random
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
    """Sends every new event to the endpoints that subscribe to it, through a bounded pool of
    background workers."""

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
        # (due time, tie-breaker, delivery, attempt number), earliest first.
        self._schedule: list[tuple[float, int, Delivery, int]] = []
        self._order = itertools.count()
        self._wakeup = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        # Every attempt holds one of these slots, so requests in flight never exceed the client's
        # connections (the workers, plus the reorder fault's in-order sender).
        self._slots = asyncio.Semaphore(config.webhook_concurrency)
        self._failing_urls: set[str] = set()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def reset(self) -> None:
        self.deliveries.clear()
        self._held.clear()
        self._schedule.clear()
        self._failing_urls.clear()

    def backlog(self) -> dict[str, int]:
        """Deliveries by status, and how many wait in the schedule (due now or for a retry)."""
        counts: dict[str, int] = {}
        for delivery in self.deliveries:
            counts[delivery.status] = counts.get(delivery.status, 0) + 1
        return {**counts, "scheduled": len(self._schedule)}

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
        self._schedule_attempt(delivery, 1, time.monotonic())

    # -- the schedule and its workers (background) ------------------------------------------

    def _schedule_attempt(self, delivery: Delivery, number: int, due: float) -> None:
        self._ensure_workers()
        heapq.heappush(self._schedule, (due, next(self._order), delivery, number))
        self._wakeup.set()

    def _ensure_workers(self) -> None:
        """Start the pool (again after a reset cancelled it)."""
        self._workers = [task for task in self._workers if not task.done()]
        for n in range(len(self._workers), self.config.webhook_concurrency):
            self._workers.append(self.background.spawn(self._work(), name=f"webhook worker {n}"))

    async def _next_due(self) -> tuple[Delivery, int]:
        while True:
            now = time.monotonic()
            if self._schedule and self._schedule[0][0] <= now:
                _, _, delivery, number = heapq.heappop(self._schedule)
                return delivery, number
            wait = self._schedule[0][0] - now if self._schedule else None
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), wait)

    async def _work(self) -> None:
        while True:
            delivery, number = await self._next_due()
            if delivery.status != "pending":  # reset or settled meanwhile
                continue
            try:
                await self._attempt_and_follow_up(delivery, number)
            except Exception:  # one bad delivery must not stop the worker
                log.exception("webhook %s: delivery attempt failed unexpectedly", delivery.id)

    async def _attempt_and_follow_up(self, delivery: Delivery, number: int) -> None:
        if await self._try(delivery, number):
            return
        if number >= self.config.webhook_max_attempts:
            self._give_up(delivery)
            return
        self._retry_later(delivery, number)

    def _retry_later(self, delivery: Delivery, number: int) -> None:
        """Attempt `number` failed: schedule the next one after a jittered exponential delay."""
        config = self.config
        delay = min(config.webhook_retry_base * 2 ** (number - 1), config.webhook_retry_max_delay)
        # Jitter spreads retries that failed together, so they do not come back in lockstep.
        delay *= random.uniform(0.75, 1.25)
        delivery.next_attempt_at = time.time() + delay
        self._schedule_attempt(delivery, number + 1, time.monotonic() + delay)

    def _endpoint_recovered(self, url: str) -> None:
        """A failing endpoint answered 2xx: everything waiting to retry to it is due now."""
        now = time.monotonic()
        promoted = 0
        for index, (due, order, delivery, number) in enumerate(self._schedule):
            if delivery.url == url and due > now:
                self._schedule[index] = (now, order, delivery, number)
                delivery.next_attempt_at = None
                promoted += 1
        if promoted:
            heapq.heapify(self._schedule)
            self._wakeup.set()
            log.info("webhook endpoint %s recovered; %d retries due now", url, promoted)

    async def _deliver_in_order(self, deliveries: list[Delivery]) -> None:
        """First attempts one after the other, so that the receiver sees this order; retries
        continue independently."""
        for delivery in deliveries:
            if await self._try(delivery, 1):
                continue
            if self.config.webhook_max_attempts <= 1:
                self._give_up(delivery)
            else:
                self._retry_later(delivery, 1)

    async def _try(self, delivery: Delivery, number: int) -> bool:
        """One attempt, recorded; True when the endpoint answered 2xx."""
        async with self._slots:
            attempt = await self._attempt(delivery, number)
        delivery.attempts.append(attempt)
        if attempt.status_code is not None and 200 <= attempt.status_code < 300:
            delivery.status = "succeeded"
            self._settled(delivery)
            if delivery.url in self._failing_urls:
                self._failing_urls.discard(delivery.url)
                self._endpoint_recovered(delivery.url)
            return True
        if attempt.status_code is None or attempt.status_code >= 500:
            # The endpoint itself is down or overloaded (not refusing this one event): once it
            # answers 2xx again, its waiting retries need not sit out their backoff.
            self._failing_urls.add(delivery.url)
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
            # One connection per slot: an attempt never waits for the pool (no PoolTimeout).
            size = self.config.webhook_concurrency
            self._client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size)
            )
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
