"""Webhook delivery: POSTs of events to registered endpoints, signed by the provider's signer,
retried with jittered exponential backoff until a 2xx, with the webhook faults (drop, duplicate,
reorder) applied.

Deliveries wait in one schedule (a heap by due time) served by a fixed pool of workers, each
holding at most one connection of an HTTP client sized to the pool: a flood of events or a slow
receiver lengthens the backlog, never the number of requests in flight, so the client's pool
cannot run dry. When an endpoint that was failing answers 2xx again, the deliveries waiting to
retry to it are due at once, so a backlog drains as soon as the receiver is back. (The same
design as the Stripe sandbox's dispatcher, which predates this kit.)"""

from __future__ import annotations

import asyncio
import collections
import fnmatch
import functools
import heapq
import itertools
import logging
import random
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from sandbox_kit import ids
from sandbox_kit.background import Background
from sandbox_kit.faults import FaultRegistry, WebhookDropFault, WebhookDuplicateFault
from sandbox_kit.http_client import WebhookHttpClient

log = logging.getLogger("sandbox_kit.webhooks")


@dataclass(frozen=True)
class WebhookSettings:
    """How deliveries are retried."""

    retry_base: float = 0.5  # first retry delay, doubled each attempt
    retry_max_delay: float = 3600.0
    max_attempts: int = 25
    timeout: float = 10.0  # per attempt
    max_concurrency: int = 8  # workers, and attempts in flight at once across endpoints


@dataclass
class Endpoint:
    """Where events go and the secret they are signed with."""

    url: str
    secret: str
    events: tuple[str, ...] = ("*",)  # event types, globs allowed
    id: str = field(default_factory=lambda: ids.new_id("we"))
    enabled: bool = True
    source: str = "admin"  # "config" (start-up), "admin" or "api"
    extra: dict[str, Any] = field(default_factory=dict)  # provider-specific facts

    def wants(self, event_type: str) -> bool:
        return self.enabled and _event_filter(self.events)(event_type)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "secret": self.secret,
            "events": list(self.events),
            "enabled": self.enabled,
            "source": self.source,
            **self.extra,
        }


@functools.lru_cache(maxsize=256)
def _event_filter(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """Whether an event type matches any of `patterns` (`fnmatchcase` globs), compiled once per
    endpoint's list: every event is checked against every endpoint's, a configured endpoint
    names a dozen types, and a glob match per type and event was felt (issue 13)."""
    if "*" in patterns:
        return lambda event_type: True
    exact = frozenset(p for p in patterns if not any(c in p for c in "*?["))
    globs = [fnmatch.translate(p) for p in patterns if p not in exact]
    if not globs:
        return exact.__contains__
    glob = re.compile("|".join(globs)).match
    return lambda event_type: event_type in exact or glob(event_type) is not None


@dataclass(frozen=True)
class WebhookEvent:
    """One event as the provider serialized it: the exact body every copy carries."""

    id: str
    type: str
    payload: str
    object_id: str | None = None
    # Facts a router may need that are not worth parsing the payload for (e.g. an account).
    context: dict[str, Any] = field(default_factory=dict)


@dataclass
class Attempt:
    """One POST of an event to an endpoint."""

    number: int
    at: float
    status_code: int | None
    error: str | None
    duration_ms: int
    headers: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "attempt": self.number,
            "at": self.at,
            "status_code": self.status_code,
            "error": self.error,
            "duration_ms": self.duration_ms,
            "headers": self.headers,
        }


@dataclass
class Delivery:
    """An event on its way to one endpoint: held, pending, succeeded, failed or dropped."""

    event: WebhookEvent
    endpoint: Endpoint
    copy: int = 1
    status: str = "pending"
    id: str = field(default_factory=lambda: ids.new_id("whdel"))
    attempts: list[Attempt] = field(default_factory=list)
    next_attempt_at: float | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event_id": self.event.id,
            "event_type": self.event.type,
            "object_id": self.event.object_id,
            "endpoint_id": self.endpoint.id,
            "url": self.endpoint.url,
            "copy": self.copy,
            "status": self.status,
            "attempts": [a.describe() for a in self.attempts],
            "next_attempt_at": self.next_attempt_at,
        }


Signer = Callable[[Delivery, int], dict[str, str]]
"""Headers (signature, ids, content type) for attempt `n` of a delivery."""

Router = Callable[[Endpoint, WebhookEvent], bool]
"""Extra routing rule beyond the endpoint's event types (e.g. Stripe Connect endpoints)."""


class WebhookDispatcher:
    """Sends every published event to the endpoints that want it, in background tasks."""

    def __init__(
        self,
        settings: WebhookSettings,
        faults: FaultRegistry,
        background: Background,
        signer: Signer,
        router: Router | None = None,
        on_settled: Callable[[Delivery], None] | None = None,
        endpoint_source: Callable[[], Iterable[Endpoint]] | None = None,
    ) -> None:
        self.settings = settings
        self.faults = faults
        self.background = background
        self.signer = signer
        self.router = router
        self.on_settled = on_settled
        # Where endpoints come from when the provider keeps them as its own objects (Stripe's
        # webhook_endpoint); otherwise the dispatcher's own registry.
        self.endpoint_source = endpoint_source
        self.endpoints: dict[str, Endpoint] = {}
        self.deliveries: list[Delivery] = []
        self._held: list[list[Delivery]] = []
        self._client: WebhookHttpClient | None = None
        self._size = max(1, settings.max_concurrency)
        # Every attempt holds a slot, so requests in flight never exceed the client's connections
        # (the workers, plus the reorder fault's in-order sender).
        self._slots = asyncio.Semaphore(self._size)
        # (due time, tie-breaker, delivery, attempt number), earliest first.
        self._schedule: list[tuple[float, int, Delivery, int]] = []
        self._order = itertools.count()
        # Idle workers, each waiting on a future of its own: a new attempt wakes one of them,
        # not the whole pool (an Event woke all eight to hand one delivery to one).
        self._idle: collections.deque[asyncio.Future[None]] = collections.deque()
        self._workers: list[asyncio.Task[None]] = []
        self._failing_urls: set[str] = set()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def reset(self) -> None:
        """Forget deliveries, held events and endpoints that were not configured at start-up."""
        self.deliveries.clear()
        self._held.clear()
        self._schedule.clear()
        self._failing_urls.clear()
        self.endpoints = {k: e for k, e in self.endpoints.items() if e.source == "config"}

    # -- endpoints -------------------------------------------------------------------------

    def register(self, endpoint: Endpoint) -> Endpoint:
        self.endpoints[endpoint.id] = endpoint
        return endpoint

    def unregister(self, endpoint_id: str) -> bool:
        return self.endpoints.pop(endpoint_id, None) is not None

    def describe(self, event_id: str | None = None, event_type: str | None = None) -> list[Any]:
        return [
            d.describe()
            for d in self.deliveries
            if (event_id is None or d.event.id == event_id)
            and (event_type is None or fnmatch.fnmatchcase(d.event.type, event_type))
        ]

    def backlog(self) -> dict[str, int]:
        """Deliveries by status, and how many wait in the schedule (due now or for a retry)."""
        counts: dict[str, int] = {}
        for delivery in self.deliveries:
            counts[delivery.status] = counts.get(delivery.status, 0) + 1
        return {**counts, "scheduled": len(self._schedule)}

    def find(self, predicate: Callable[[Delivery], bool]) -> Delivery | None:
        return next((d for d in self.deliveries if predicate(d)), None)

    # -- publishing (called under the state lock) ------------------------------------------

    def all_endpoints(self) -> list[Endpoint]:
        if self.endpoint_source is not None:
            return list(self.endpoint_source())
        return list(self.endpoints.values())

    def targets(self, event: WebhookEvent) -> list[Endpoint]:
        """The endpoints `event` goes to (a provider may count them into its payload first)."""
        return [
            endpoint
            for endpoint in self.all_endpoints()
            if endpoint.wants(event.type) and (self.router is None or self.router(endpoint, event))
        ]

    def publish(self, event: WebhookEvent, targets: list[Endpoint] | None = None) -> list[Delivery]:
        """Queue `event` for every endpoint that wants it (`targets`, when the provider has
        looked them up already), applying the webhook faults."""
        if targets is None:
            targets = self.targets(event)
        if not targets:
            return []
        if self.faults.take_webhook(WebhookDropFault, event.type) is not None:
            dropped = [Delivery(event, endpoint, status="dropped") for endpoint in targets]
            self.deliveries.extend(dropped)
            log.info("webhook fault: dropped %s %s", event.type, event.id)
            return dropped
        duplicate = self.faults.take_webhook(WebhookDuplicateFault, event.type)
        copies = duplicate.times if duplicate is not None else 1
        batch = [
            Delivery(event, endpoint, copy=copy)
            for copy in range(1, copies + 1)
            for endpoint in targets
        ]
        self.deliveries.extend(batch)

        reorder = self.faults.reorder(event.type)
        if reorder is not None:
            for delivery in batch:
                delivery.status = "held"
            self._held.append(batch)
            reorder.fired += 1
            if reorder.remaining is not None and len(self._held) >= reorder.remaining:
                self.faults.remove(reorder.id)
                self.release_held()
            return batch
        now = time.monotonic()
        for delivery in batch:
            self._schedule_attempt(delivery, 1, now)
        return batch

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

    # -- the schedule and its workers (background) ------------------------------------------

    def _schedule_attempt(self, delivery: Delivery, number: int, due: float) -> None:
        self._ensure_workers()
        heapq.heappush(self._schedule, (due, next(self._order), delivery, number))
        self._wake(1)

    def _wake(self, workers: int) -> None:
        """Wake up to `workers` idle workers to look at the schedule again."""
        while workers > 0 and self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():  # else its worker timed out or was cancelled
                waiter.set_result(None)
                workers -= 1

    def _ensure_workers(self) -> None:
        """Start the pool (again after a reset cancelled it)."""
        self._workers = [task for task in self._workers if not task.done()]
        for n in range(len(self._workers), self._size):
            self._workers.append(self.background.spawn(self._work(), name=f"webhook worker {n}"))

    async def _next_due(self) -> tuple[Delivery, int]:
        while True:
            now = time.monotonic()
            if self._schedule and self._schedule[0][0] <= now:
                _, _, delivery, number = heapq.heappop(self._schedule)
                return delivery, number
            wait = self._schedule[0][0] - now if self._schedule else None
            waiter = asyncio.get_running_loop().create_future()
            self._idle.append(waiter)
            try:
                async with asyncio.timeout(wait):  # the earliest retry, if any, is due then
                    await waiter
            except TimeoutError:
                pass
            finally:
                if waiter in self._idle:  # timed out or cancelled: not waiting any more
                    self._idle.remove(waiter)

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
        if number >= self.settings.max_attempts:
            self._give_up(delivery)
            return
        self._retry_later(delivery, number)

    def _retry_later(self, delivery: Delivery, number: int) -> None:
        """Attempt `number` failed: schedule the next after a jittered exponential delay."""
        s = self.settings
        delay = min(s.retry_base * 2 ** (number - 1), s.retry_max_delay)
        # Jitter spreads retries that failed together, so they do not come back in lockstep.
        delay *= random.uniform(0.75, 1.25)
        delivery.next_attempt_at = time.time() + delay
        self._schedule_attempt(delivery, number + 1, time.monotonic() + delay)

    def _endpoint_recovered(self, url: str) -> None:
        """A failing endpoint answered 2xx: everything waiting to retry to it is due now."""
        now = time.monotonic()
        promoted = 0
        for index, (due, order, delivery, number) in enumerate(self._schedule):
            if delivery.endpoint.url == url and due > now:
                self._schedule[index] = (now, order, delivery, number)
                delivery.next_attempt_at = None
                promoted += 1
        if promoted:
            heapq.heapify(self._schedule)
            self._wake(promoted)
            log.info("webhook endpoint %s recovered; %d retries due now", url, promoted)

    async def _deliver_in_order(self, deliveries: list[Delivery]) -> None:
        """First attempts one after the other, so that the receiver sees this order; retries
        go through the schedule."""
        for delivery in deliveries:
            if await self._try(delivery, 1):
                continue
            if self.settings.max_attempts <= 1:
                self._give_up(delivery)
            else:
                self._retry_later(delivery, 1)

    async def _try(self, delivery: Delivery, number: int) -> bool:
        """One attempt, recorded; True when the endpoint answered 2xx."""
        async with self._slots:
            attempt = await self._attempt(delivery, number)
        delivery.attempts.append(attempt)
        url = delivery.endpoint.url
        if attempt.status_code is not None and 200 <= attempt.status_code < 300:
            delivery.status = "succeeded"
            delivery.next_attempt_at = None
            if self.on_settled is not None:
                self.on_settled(delivery)
            if url in self._failing_urls:
                self._failing_urls.discard(url)
                self._endpoint_recovered(url)
            return True
        if attempt.status_code is None or attempt.status_code >= 500:
            # The endpoint itself is down or overloaded (not refusing this one event): once it
            # answers 2xx again, its waiting retries need not sit out their backoff.
            self._failing_urls.add(url)
        return False

    def _give_up(self, delivery: Delivery) -> None:
        delivery.status = "failed"
        if self.on_settled is not None:
            self.on_settled(delivery)
        log.warning(
            "webhook %s for %s gave up after %d attempts",
            delivery.event.type,
            delivery.endpoint.url,
            len(delivery.attempts),
        )

    async def _attempt(self, delivery: Delivery, number: int) -> Attempt:
        if self._client is None:
            # The slots bound the attempts in flight, so the client never waits for a connection
            # (no PoolTimeout); it keeps one idle connection per slot.
            self._client = WebhookHttpClient(max_idle=self._size)
        started = time.time()
        headers = self.signer(delivery, number)
        status_code: int | None = None
        error: str | None = None
        try:
            status_code = await self._client.post(
                delivery.endpoint.url,
                delivery.event.payload.encode(),
                headers,
                timeout=self.settings.timeout,
            )
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        duration = int((time.time() - started) * 1000)
        log.info(
            "webhook %s %s -> %s attempt %d: %s",
            delivery.event.type,
            delivery.event.id,
            delivery.endpoint.url,
            number,
            status_code or error,
        )
        return Attempt(number, started, status_code, error, duration, headers)
