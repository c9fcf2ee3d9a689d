"""The sandbox's webhook sender under a flood to a slow, then failing, then healthy receiver:
bounded requests in flight, no connection-pool exhaustion, and the backlog drains by itself once
the receiver is back (the jam seen with 200 concurrent postings: PoolTimeout on every delivery,
1,700 pending, never recovered)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from hirepay_dev.procs import free_port
from hirepay_dev.sandbox_client import SandboxAdmin, start_sandbox, stripe_client

CONCURRENCY = 4
INTENTS = 150


def _sender_hung_up(connection: socket.socket) -> bool:
    """Whether the sender closed this connection (its FIN is queued: a peek reads end of file).
    Its request was read whole before, so nothing else can be waiting on it."""
    try:
        return connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class ModalReceiver:
    """A webhook receiver that is `slow` (503 after a while), `hung` (answers only after the
    sender gave up), `failing` (503 at once) or `ok` (200). It records the most requests it had in
    flight at once: requests it has read and not answered, whose sender still waits for the answer.

    A request whose sender gave up (the sender closes the connection on its timeout before it
    starts another attempt) is not counted, though its handler thread may still be sleeping: on a
    loaded machine a `slow` handler can outlive the sender's timeout, and counting such a request
    would measure this receiver's scheduling, not the sender's bound. Each arrival first drops the
    requests whose connections the sender has closed, so the count does not depend on when their
    handler threads run again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/webhooks"
        self.mode = "ok"
        self.in_flight: set[socket.socket] = set()
        self.max_in_flight = 0
        self.accepted: set[str] = set()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.in_flight = {c for c in receiver.in_flight if not _sender_hung_up(c)}
                    receiver.in_flight.add(self.connection)
                    receiver.max_in_flight = max(receiver.max_in_flight, len(receiver.in_flight))
                    mode = receiver.mode
                if mode == "hung":
                    with receiver._lock:
                        receiver.in_flight.discard(self.connection)
                    time.sleep(1.0)  # past the sender's timeout: it hangs up first
                    return
                if mode == "slow":
                    time.sleep(0.2)
                status = 200 if mode == "ok" else 503
                with receiver._lock:
                    if status == 200:
                        receiver.accepted.add(json.loads(body)["id"])
                    # Before answering: the sender may start its next request as soon as it
                    # reads this one's answer.
                    receiver.in_flight.discard(self.connection)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> ModalReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def modal_receiver() -> Iterator[ModalReceiver]:
    server = ModalReceiver().start()
    yield server
    server.stop()


@pytest.fixture
def flood_sandbox(modal_receiver: ModalReceiver) -> Iterator[str]:
    process, url = start_sandbox(
        name="sandbox-webhook-overload",
        env={
            "SANDBOX_WEBHOOK_URL": modal_receiver.url,
            "SANDBOX_WEBHOOK_SECRET": "whsec_overloadtest000000000000000000",
            "SANDBOX_WEBHOOK_CONCURRENCY": str(CONCURRENCY),
            "SANDBOX_WEBHOOK_TIMEOUT": "0.5",
            "SANDBOX_WEBHOOK_RETRY_BASE": "0.1",
            "SANDBOX_WEBHOOK_RETRY_MAX_DELAY": "30",
            "SANDBOX_WEBHOOK_MAX_ATTEMPTS": "1000",
        },
    )
    yield url
    process.stop()


def test_a_flood_to_a_struggling_receiver_drains_once_it_is_back(
    flood_sandbox: str, modal_receiver: ModalReceiver
) -> None:
    admin = SandboxAdmin(flood_sandbox)
    sdk = stripe_client(flood_sandbox, allow_sync=True)
    try:
        modal_receiver.mode = "slow"

        def post(n: int) -> str:
            intent = sdk.v1.payment_intents.create(
                params={
                    "amount": 1000 + n,
                    "currency": "usd",
                    "payment_method": "pm_card_visa",
                    "confirm": True,
                    "payment_method_types": ["card"],
                }
            )
            return str(intent.id)

        with ThreadPoolExecutor(8) as pool:
            intents = list(pool.map(post, range(INTENTS)))
        assert len(set(intents)) == INTENTS
        total = len(admin.deliveries())
        assert total >= 2 * INTENTS  # created + succeeded (and more) per intent

        time.sleep(3)  # slow receiver: 503 after 0.2 s, with hundreds of deliveries waiting
        # Bounded: never more requests in flight than the pool, whatever the backlog.
        assert 1 <= modal_receiver.max_in_flight <= CONCURRENCY
        modal_receiver.mode = "hung"
        time.sleep(2)  # hung receiver: attempts time out
        modal_receiver.mode = "failing"
        time.sleep(1)  # failing receiver: 503 at once
        jammed = admin.webhook_backlog()
        assert jammed.get("succeeded", 0) == 0
        assert jammed["pending"] == total
        errors = [
            attempt["error"] or ""
            for delivery in admin.deliveries()
            for attempt in delivery["attempts"]
        ]
        assert [e for e in errors if "ReadTimeout" in e]  # the hung phase timed out
        assert not [e for e in errors if "PoolTimeout" in e]  # never the sender's own pool

        modal_receiver.mode = "ok"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            backlog = admin.webhook_backlog()
            if backlog.get("succeeded", 0) == total:
                break
            time.sleep(0.25)
        backlog = admin.webhook_backlog()
        assert backlog.get("succeeded", 0) == total, backlog
        assert backlog.get("pending", 0) == 0 and backlog["scheduled"] == 0
        assert modal_receiver.max_in_flight <= CONCURRENCY
        event_ids = {delivery["event_id"] for delivery in admin.deliveries()}
        assert event_ids <= modal_receiver.accepted
    finally:
        admin.close()
