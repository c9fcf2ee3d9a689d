"""sandbox_kit on its own: fault specs (common and provider kinds), the registry's matching and
counting, idempotency conflicts, configuration, and the dispatcher's retries, faults and
bounded concurrency."""

from __future__ import annotations

import asyncio
import fnmatch
from collections import Counter
from typing import Any, Literal

import pytest
from pydantic import ValidationError

from sandbox_kit import ids
from sandbox_kit.background import Background
from sandbox_kit.config import load_config
from sandbox_kit.faults import (
    ErrorFault,
    Fault,
    FaultRegistry,
    WebhookDropFault,
    fault_adapter,
)
from sandbox_kit.idempotency import (
    IdempotencyCache,
    IdempotencyConflict,
    SavedResponse,
    fingerprint,
)
from sandbox_kit.webhooks import (
    Attempt,
    Delivery,
    Endpoint,
    WebhookDispatcher,
    WebhookEvent,
    WebhookSettings,
)


class PayoutFailure(Fault):
    kind: Literal["payout_failure"]
    failure_code: str = "account_closed"


def test_fault_adapter_takes_provider_kinds() -> None:
    specs = fault_adapter(PayoutFailure)
    assert isinstance(specs.validate_python({"kind": "error", "status": 503}), ErrorFault)
    assert specs.validate_python({"kind": "payout_failure"}).failure_code == "account_closed"
    with pytest.raises(ValidationError):
        fault_adapter().validate_python({"kind": "payout_failure"})
    with pytest.raises(ValidationError):
        specs.validate_python({"kind": "error", "status": 418})


def test_registry_matches_paths_methods_and_counts() -> None:
    registry = FaultRegistry()
    specs = fault_adapter()
    registry.add(
        specs.validate_python(
            {"kind": "error", "count": 2, "method": "POST", "path_prefix": "/v1/payments/*/capture"}
        )
    )
    registry.add(specs.validate_python({"kind": "latency", "ms": 250, "path_prefix": "/v1/orders"}))
    assert registry.take_api((ErrorFault,), "GET", "/v1/payments/pay_1/capture") is None
    assert registry.take_api((ErrorFault,), "POST", "/v1/payments/pay_1/refund") is None
    assert registry.take_api((ErrorFault,), "POST", "/v1/payments/pay_1/capture") is not None
    assert registry.take_api((ErrorFault,), "POST", "/v1/payments/pay_2/capture") is not None
    assert registry.take_api((ErrorFault,), "POST", "/v1/payments/pay_3/capture") is None  # used up
    assert registry.take_slowness("POST", "/v1/orders") == (0.25, None)
    assert [f["kind"] for f in registry.describe()] == ["latency"]
    assert registry.describe()[0]["fired"] == 1


def test_idempotency_replay_mismatch_in_flight_and_forget() -> None:
    cache = IdempotencyCache()
    same = fingerprint("POST", "/v1/x", b'{"a": 1, "b": 2}')
    assert fingerprint("POST", "/v1/x", b'{"b":2,"a":1}') == same  # JSON compares as data
    assert cache.begin("key_1", "k", same) is None
    with pytest.raises(IdempotencyConflict) as twin:
        cache.begin("key_1", "k", same)
    assert twin.value.reason == "in_flight"
    cache.finish("key_1", "k", SavedResponse(201, b"{}"))
    assert cache.begin("key_1", "k", same) == SavedResponse(201, b"{}")
    other = fingerprint("POST", "/v1/x", b'{"a": 2}')
    with pytest.raises(IdempotencyConflict) as mismatch:
        cache.begin("key_1", "k", other)
    assert mismatch.value.reason == "mismatch"
    assert cache.begin("key_1", "k", other, strict=False) == SavedResponse(201, b"{}")
    assert cache.begin("key_2", "k", other) is None  # keys are scoped
    cache.finish("key_2", "k", None)  # not kept (5xx): the key is free again
    assert cache.begin("key_2", "k", same) is None
    restored = IdempotencyCache()
    restored.restore(cache.snapshot())  # finished entries survive a state file round trip
    assert restored.begin("key_1", "k", same) == SavedResponse(201, b"{}")
    assert restored.begin("key_2", "k", same) is None


def test_idempotency_keys_expire_after_their_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    """A saved answer is replayed until its TTL and never after, swept or not; a request still
    running keeps its key; expired answers leave memory at the next sweep."""
    now = [1000.0]
    monkeypatch.setattr("sandbox_kit.idempotency.time.monotonic", lambda: now[0])
    cache = IdempotencyCache(ttl_seconds=60)
    first = fingerprint("POST", "/v1/x", b"a=1")
    for n in range(3):
        assert cache.begin("key", f"old-{n}", first) is None
        cache.finish("key", f"old-{n}", SavedResponse(200, b"old"))
    assert cache.begin("key", "running", first) is None  # still in flight past its TTL
    now[0] = 1059.5  # a sweep: nothing is 60 s old yet
    assert cache.begin("key", "young", first) is None
    cache.finish("key", "young", SavedResponse(200, b"young"))
    assert cache.begin("key", "old-0", first) == SavedResponse(200, b"old")
    now[0] = 1060.2  # old-* expired; no sweep since 1059.5
    assert cache.begin("key", "old-1", first) is None  # a new request, not a replay
    assert cache.begin("key", "young", first) == SavedResponse(200, b"young")
    now[0] = 1059.5 + cache.PRUNE_EVERY
    assert cache.begin("key", "another", first) is None  # sweeps
    assert {item["key"] for item in cache.snapshot()} == {"young"}
    assert cache.begin("key", "old-2", first) is None  # swept: new
    with pytest.raises(IdempotencyConflict):
        cache.begin("key", "running", first)
    cache.finish("key", "running", SavedResponse(200, b"late"))
    assert cache.begin("key", "running", first) is None  # saved past its TTL: expired at once


def test_config_reads_flags_then_prefixed_environment() -> None:
    config, _ = load_config(
        "demo_sandbox",
        "DEMO_SANDBOX",
        12345,
        ["--webhook-url", "http://a/1,http://b/2", "--webhook-max-attempts", "3"],
        {
            "DEMO_SANDBOX_PORT": "4000",
            "DEMO_SANDBOX_WEBHOOK_RETRY_BASE": "0.1",
            "SANDBOX_PORT": "1",
        },
    )
    assert (config.port, config.webhook_urls) == (4000, ("http://a/1", "http://b/2"))
    assert (config.webhooks.retry_base, config.webhooks.max_attempts) == (0.1, 3)
    defaults, _ = load_config("demo_sandbox", "DEMO_SANDBOX", 12345, [], {})
    assert (defaults.port, defaults.webhook_urls, defaults.webhooks.max_concurrency) == (
        12345,
        (),
        8,
    )


def _dispatcher(
    settings: WebhookSettings, faults: FaultRegistry | None = None
) -> WebhookDispatcher:
    lock = asyncio.Lock()
    return WebhookDispatcher(
        settings,
        faults or FaultRegistry(),
        Background(lock),
        signer=lambda delivery, attempt: {"X-Test-Attempt": str(attempt)},
    )


class _SlowReceiver:
    """Stands in for the dispatcher's HTTP attempts: each takes `seconds`, answers the next
    status queued for its event (else 200), and the most attempts at once are counted."""

    def __init__(
        self, dispatcher: WebhookDispatcher, seconds: float, answers: dict[str, list[int]]
    ):
        self.dispatcher = dispatcher
        self.seconds = seconds
        self.answers = answers
        self.in_flight = 0
        self.most = 0
        dispatcher._attempt = self.attempt  # type: ignore[method-assign]

    async def attempt(self, delivery: Delivery, number: int) -> Attempt:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(self.seconds)
        self.in_flight -= 1
        queue = self.answers.get(delivery.event.id, [])
        status = queue.pop(0) if queue else 200
        headers = self.dispatcher.signer(delivery, number)
        return Attempt(number, 0.0, status, None, int(self.seconds * 1000), headers)

    async def settled(self) -> None:
        for _ in range(200):
            if all(d.status == "succeeded" for d in self.dispatcher.deliveries):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("deliveries not settled")


async def test_dispatcher_retries_with_backoff_until_2xx_and_bounds_concurrency() -> None:
    dispatcher = _dispatcher(
        WebhookSettings(retry_base=0.01, retry_max_delay=0.02, max_attempts=5, max_concurrency=2)
    )
    dispatcher.register(
        Endpoint(url="http://receiver.test/hook", secret="s", events=("payment.*",))
    )
    receiver = _SlowReceiver(dispatcher, 0.02, {"evt_1": [500, 503, 200]})
    for index in range(1, 7):
        dispatcher.publish(WebhookEvent(f"evt_{index}", "payment.captured", "{}", "pay_1"))
    assert (
        dispatcher.publish(WebhookEvent("evt_x", "order.paid", "{}", "order_1")) == []
    )  # not subscribed
    await receiver.settled()
    assert receiver.most == 2
    first = next(d for d in dispatcher.deliveries if d.event.id == "evt_1")
    assert [a.status_code for a in first.attempts] == [500, 503, 200]
    assert [a.headers["X-Test-Attempt"] for a in first.attempts] == ["1", "2", "3"]
    await dispatcher.background.cancel_all()


async def test_idle_workers_wake_one_per_delivery_and_all_for_a_burst() -> None:
    """Workers waiting for work are woken one per new delivery, so a burst after a quiet spell
    still goes out on every worker at once, and a retry due later wakes one of them."""
    dispatcher = _dispatcher(WebhookSettings(retry_base=0.05, max_attempts=3, max_concurrency=4))
    dispatcher.register(Endpoint(url="http://receiver.test/hook", secret="s"))
    receiver = _SlowReceiver(dispatcher, 0.05, {"evt_retry": [503]})
    dispatcher.publish(WebhookEvent("evt_retry", "payment.captured", "{}", "pay_0"))
    await receiver.settled()  # failed once, waited idle for its retry, then succeeded
    assert [a.status_code for a in dispatcher.deliveries[0].attempts] == [503, 200]
    assert receiver.most == 1
    await asyncio.sleep(0.05)  # every worker idle, waiting
    assert len(dispatcher._idle) == 4
    for index in range(1, 5):
        dispatcher.publish(WebhookEvent(f"evt_{index}", "payment.captured", "{}", "pay_1"))
    await receiver.settled()
    assert receiver.most == 4
    await dispatcher.background.cancel_all()
    assert not dispatcher._idle  # cancelled workers leave no waiter behind


async def test_dispatcher_gives_up_and_drops() -> None:
    faults = FaultRegistry()
    dispatcher = _dispatcher(WebhookSettings(retry_base=0.0, max_attempts=2), faults)
    dispatcher.register(Endpoint(url="http://receiver.test/hook", secret="s"))

    async def always_down(delivery: Delivery, number: int) -> Attempt:
        return Attempt(number, 0.0, None, "ConnectError: refused", 0)

    dispatcher._attempt = always_down  # type: ignore[method-assign]
    faults.add(WebhookDropFault(kind="webhook_drop", count=1))
    (dropped,) = dispatcher.publish(WebhookEvent("evt_1", "a", "{}", "o"))
    (failing,) = dispatcher.publish(WebhookEvent("evt_2", "a", "{}", "o"))
    assert dropped.status == "dropped"
    for _ in range(100):
        if failing.status == "failed":
            break
        await asyncio.sleep(0.01)
    assert failing.status == "failed" and len(failing.attempts) == 2
    described: list[Any] = dispatcher.describe(event_id="evt_2")
    assert described[0]["attempts"][0]["error"].startswith("ConnectError")
    await dispatcher.background.cancel_all()


async def test_a_recovered_endpoint_gets_its_waiting_retries_at_once() -> None:
    dispatcher = _dispatcher(WebhookSettings(retry_base=30.0, retry_max_delay=60.0, max_attempts=5))
    dispatcher.register(Endpoint(url="http://receiver.test/hook", secret="s"))
    down = True

    async def flaky(delivery: Delivery, number: int) -> Attempt:
        return Attempt(number, 0.0, 503 if down else 200, None, 0)

    dispatcher._attempt = flaky  # type: ignore[method-assign]
    first = dispatcher.publish(WebhookEvent("evt_1", "a", "{}", "o"))[0]
    second = dispatcher.publish(WebhookEvent("evt_2", "a", "{}", "o"))[0]
    for _ in range(100):
        if first.attempts and second.attempts:
            break
        await asyncio.sleep(0.01)
    assert first.next_attempt_at is not None  # waiting ~30 s for its retry
    assert dispatcher.backlog() == {"pending": 2, "scheduled": 2}
    down = False
    third = dispatcher.publish(WebhookEvent("evt_3", "a", "{}", "o"))[0]
    for _ in range(100):
        if all(d.status == "succeeded" for d in (first, second, third)):
            break
        await asyncio.sleep(0.01)
    assert [d.status for d in (first, second, third)] == ["succeeded"] * 3
    assert [a.status_code for a in first.attempts] == [503, 200]
    assert dispatcher.backlog() == {"succeeded": 3, "scheduled": 0}
    await dispatcher.background.cancel_all()


async def test_a_4xx_refuses_one_event_without_marking_the_endpoint_failing() -> None:
    dispatcher = _dispatcher(WebhookSettings(retry_base=30.0, retry_max_delay=60.0, max_attempts=5))
    dispatcher.register(Endpoint(url="http://receiver.test/hook", secret="s"))

    async def refuse_first(delivery: Delivery, number: int) -> Attempt:
        return Attempt(number, 0.0, 400 if delivery.event.id == "evt_1" else 200, None, 0)

    dispatcher._attempt = refuse_first  # type: ignore[method-assign]
    refused = dispatcher.publish(WebhookEvent("evt_1", "a", "{}", "o"))[0]
    for _ in range(100):
        if refused.attempts:
            break
        await asyncio.sleep(0.01)
    later = dispatcher.publish(WebhookEvent("evt_2", "a", "{}", "o"))[0]
    for _ in range(100):
        if later.status == "succeeded":
            break
        await asyncio.sleep(0.01)
    assert later.status == "succeeded"
    await asyncio.sleep(0.05)
    # The refused event keeps its backoff: the endpoint was never down.
    assert [a.status_code for a in refused.attempts] == [400]
    assert refused.next_attempt_at is not None
    await dispatcher.background.cancel_all()


def test_random_tokens_use_every_character_of_the_alphabet_evenly() -> None:
    for alphabet in (ids.LETTERS_DIGITS, ids.UPPER_DIGITS, "ab"):
        tokens = [ids.random_token(40, alphabet) for _ in range(500)]
        assert all(len(token) == 40 and set(token) <= set(alphabet) for token in tokens)
        counts = Counter("".join(tokens))
        expected = 40 * 500 / len(alphabet)
        assert set(counts) == set(alphabet)
        assert all(abs(n - expected) < 6 * expected**0.5 for n in counts.values())
    assert len({ids.new_id("evt") for _ in range(1000)}) == 1000


def test_an_endpoint_wants_the_event_types_its_globs_match() -> None:
    types = [
        "payment_intent.succeeded",
        "charge.succeeded",
        "charge.captured",
        "payout.paid",
        "x.y",
        "a[b",
        "PAYMENT.CAPTURE.COMPLETED",
    ]
    lists = [
        ("*",),
        ("payment_intent.*",),
        ("payment_intent.succeeded", "payout.*"),
        ("charge.[sc]*",),
        ("x?y",),
        ("a[b",),
        (),
        ("PAYMENT.*", "order.paid"),
    ]
    for events in lists:
        endpoint = Endpoint(url="http://receiver.test/hook", secret="s", events=events)
        for event_type in types:
            matched = any(fnmatch.fnmatchcase(event_type, pattern) for pattern in events)
            assert endpoint.wants(event_type) == matched, (events, event_type)
    assert not Endpoint(url="u", secret="s", enabled=False).wants("payout.paid")
