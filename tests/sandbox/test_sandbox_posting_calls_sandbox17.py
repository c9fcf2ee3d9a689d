"""What one card posting costs the Stripe sandbox in Python calls (issue 13), pinned: the two
provider calls payments makes (a PaymentIntent created and confirmed for manual capture, then
its capture), sent by payments' own Stripe adapter through the official SDK, and the two
webhook deliveries they cause (the events payments acts on, as the dev stack enables them).

The sandbox runs in this process as `python -m stripe_sandbox` serves it (the same uvicorn
configuration: httptools, its proxy-headers layer, the access log; uvloop; INFO logging, its
records gathering only what is printed) in a thread of its own, and only that thread is counted
(cProfile is per thread): the SDK, payments' adapter and the webhook receiver (a keep-alive
HTTP/1.1 server, as the gateway is) are not in the count. The server is started without uvicorn's once-a-tenth-of-a-second tick and the
sandbox without its session-expiry sweep, which run whatever the load; each posting is counted
from before its first request until its deliveries are settled and the sender is idle again,
and the least of a few postings is taken (a posting's window may also hold a stray wake-up)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import pstats
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import stripe
import uvloop
from uvicorn.server import ServerState

from hirepay_dev.procs import free_port
from payments.adapters.stripe_provider import WEBHOOK_EVENT_TYPES, StripeProvider
from payments.domain.provider import AuthorizeRequest, ProviderStatus
from sandbox_kit.webhooks import WebhookDispatcher
from stripe_sandbox.__main__ import gather_only_printed_log_facts, server_config
from stripe_sandbox.config import SandboxConfig
from tests.support.python_calls import profiled
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "whsec_sandbox17postingcalls000000000"
API_KEY = "sk_test_sandbox17"
WARM_UP = 3
COUNTED = 5

# Python calls (cProfile's count, built-ins included) of one posting in the sandbox's thread.
# Before this round's cuts: 4,447 (the JSON written a node at a time in Python, the form parsed
# twice, Starlette's request and header objects, h11 for every delivery...).
MAX_CALLS_PER_POSTING = 3_460


# What gather_only_printed_log_facts switches off, put back after the test.
_LOG_SWITCHES = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")


@dataclass
class _Served:
    """The sandbox serving on a loop in its own thread."""

    loop: asyncio.AbstractEventLoop
    url: str
    dispatcher: WebhookDispatcher

    def run(self, call: Callable[..., Any], *args: Any) -> None:
        """`call(*args)` in the sandbox's thread, waited for (nothing of this thread's own in
        between: the loop calls it)."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def step() -> None:
            call(*args)
            done.set_result(None)

        self.loop.call_soon_threadsafe(step)
        done.result(timeout=10)

    def settled(self, deliveries: int) -> bool:
        found = self.dispatcher.deliveries
        return len(found) >= deliveries and all(d.status == "succeeded" for d in found)


@pytest.fixture
def served(receiver_keep_alive: WebhookReceiver) -> Iterator[_Served]:
    config = SandboxConfig(
        port=free_port(),
        webhook_urls=(receiver_keep_alive.url,),
        webhook_events=WEBHOOK_EVENT_TYPES,
        webhook_secret=SECRET,
    )
    uv = server_config(config)
    uv.load()
    loop = uvloop.new_event_loop()
    state = ServerState()
    server = loop.run_until_complete(
        loop.create_server(
            lambda: uv.http_protocol_class(config=uv, server_state=state, app_state={}),
            config.host,
            config.port,
        )
    )
    thread = threading.Thread(target=loop.run_forever, name="sandbox", daemon=True)
    thread.start()
    sandbox = uv.loaded_app.app.app.state.sandbox  # (proxy headers → faults → Starlette)
    root = logging.getLogger()
    level = root.level
    switches = {name: getattr(logging, name) for name in _LOG_SWITCHES}
    root.setLevel(logging.INFO)  # as `python -m stripe_sandbox` logs
    gather_only_printed_log_facts()
    try:
        yield _Served(loop, f"http://{config.host}:{config.port}", sandbox.webhooks)
    finally:
        root.setLevel(level)
        for name, value in switches.items():
            setattr(logging, name, value)

        async def close() -> None:
            server.close()
            await sandbox.shutdown()

        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def receiver_keep_alive() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(keep_alive=True).start()
    yield server
    server.stop()


async def _posting(provider: StripeProvider) -> str:
    """Authorize then capture a posting's fee, as payments does; the PaymentIntent's id."""
    payment = uuid.uuid4().hex
    authorized = await provider.authorize(
        AuthorizeRequest(
            amount_minor=14900,
            currency="USD",
            payment_method="pm_card_visa",
            manual_capture=True,
            description="Job posting",
            metadata={
                "subsystem": "jobs",
                "hirepay_payment_id": payment,
                "global_tx_id": uuid.uuid4().hex,
                "branch_id": uuid.uuid4().hex,
            },
        ),
        f"payment-{payment}-authorize",
    )
    assert authorized.status is ProviderStatus.AUTHORIZED
    captured = await provider.capture(authorized.id, 14900, f"payment-{payment}-capture")
    assert captured.status is ProviderStatus.CAPTURED
    assert captured.amount_received == 14900
    return authorized.id


def _wait(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the sandbox did not settle its deliveries"
        time.sleep(0.002)
    time.sleep(0.05)  # the sender's worker back to waiting for the next delivery


def _counted_postings(served: _Served) -> list[int]:
    provider = StripeProvider(API_KEY, api_base=served.url)
    counts: list[int] = []

    async def main() -> None:
        for n in range(WARM_UP + COUNTED):
            window = profiled()
            served.run(window.__enter__)
            await _posting(provider)
            _wait(functools.partial(served.settled, 2 * (n + 1)))
            served.run(window.__exit__, None, None, None)
            if n >= WARM_UP:
                counts.append(pstats.Stats(window.profile).total_calls)  # type: ignore[attr-defined]

    asyncio.run(main())
    return counts


def test_a_postings_two_calls_and_two_deliveries_cost_the_sandbox_at_most_the_pinned_calls(
    served: _Served, receiver_keep_alive: WebhookReceiver
) -> None:
    counts = _counted_postings(served)
    # The postings were answered and their events delivered, signed, as before (a posting's
    # two deliveries may overtake each other: the sender has several connections).
    received = receiver_keep_alive.received
    assert Counter(r.type for r in received) == {
        "payment_intent.amount_capturable_updated": WARM_UP + COUNTED,
        "payment_intent.succeeded": WARM_UP + COUNTED,
    }
    for delivery in received:
        event = stripe.Webhook.construct_event(
            delivery.body.decode(), delivery.header("Stripe-Signature"), SECRET
        )
        assert event["data"]["object"]["object"] == "payment_intent"
    print("sandbox Python calls per posting:", counts)
    assert min(counts) <= MAX_CALLS_PER_POSTING, counts
