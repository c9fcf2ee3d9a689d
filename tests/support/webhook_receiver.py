"""The one webhook receiver of the sandbox tests: an HTTP server in a thread that records every
delivery (path, headers and exact body) and can answer errors for chosen objects.

A provider's body format is read by a `describe` function (event type, object id): Stripe's by
default (`WebhookReceiver()`); the PayPal, Razorpay and Fatora tests pass their own
(`ProviderReceiver(describe)`, the same class)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hirepay_dev.procs import free_port

# Reads (event type, object id) from a provider's webhook body.
Describe = Callable[[dict[str, Any]], tuple[str, str]]


def describe_stripe(event: dict[str, Any]) -> tuple[str, str]:
    return str(event["type"]), str(event["data"]["object"]["id"])


@dataclass
class Received:
    """One webhook POST as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    answered: int
    event_type: str
    object_id: str

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)
        return event

    @property
    def type(self) -> str:
        return self.event_type

    def header(self, name: str) -> str:
        lowered = {k.lower(): v for k, v in self.headers.items()}
        return lowered[name.lower()]


Delivery = Received


class WebhookReceiver:
    """A tiny HTTP server recording webhook deliveries; can answer errors for chosen objects.
    A body `describe` cannot read is answered 400 when `refuse_unreadable` (Stripe's tests),
    else recorded as about "?"."""

    def __init__(
        self,
        describe: Describe = describe_stripe,
        *,
        refuse_unreadable: bool = False,
        keep_alive: bool = False,
    ):
        self.describe = describe
        self.refuse_unreadable = refuse_unreadable or describe is describe_stripe
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/webhooks"
        self.received: list[Received] = []
        # (object id, event type or None) -> status codes to answer first
        self._failures: dict[tuple[str, str | None], list[int]] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1 keeps a sender's connection open between deliveries, as the gateway does
            # (`keep_alive`); HTTP/1.0 closes it after each answer.
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = 0
                try:
                    event_type, object_id = receiver.describe(json.loads(body))
                except (ValueError, KeyError, TypeError):
                    event_type, object_id = "?", "?"
                    status = 400 if receiver.refuse_unreadable else 0
                with receiver._lock:
                    status = status or receiver._answer_for(object_id, event_type)
                    receiver.received.append(
                        Received(
                            self.path,
                            dict(self.headers.items()),
                            body,
                            status,
                            event_type,
                            object_id,
                        )
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail(self, object_id: str, *statuses: int, event_type: str | None = None) -> None:
        """Answer these statuses, in order, to the next deliveries about `object_id` (of
        `event_type` only, when given)."""
        with self._lock:
            self._failures[(object_id, event_type)] = list(statuses)

    def _answer_for(self, object_id: str, event_type: str) -> int:
        for key in ((object_id, event_type), (object_id, None)):
            pending = self._failures.get(key)
            if pending:
                return pending.pop(0)
        return 200

    def matching(self, predicate: Callable[[Received], bool]) -> list[Received]:
        with self._lock:
            return [r for r in self.received if predicate(r)]

    def about(self, object_id: str, event_type: str | None = None) -> list[Received]:
        """Deliveries about one object (and of one type), in arrival order."""
        return self.matching(
            lambda r: r.object_id == object_id and (event_type is None or r.type == event_type)
        )

    def wait_for(
        self, predicate: Callable[[Received], bool], count: int = 1, timeout: float = 5.0
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.matching(predicate)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        seen = [(r.event_type, r.object_id) for r in self.received[-10:]]
        raise AssertionError(
            f"expected {count} webhook(s), got {len(self.matching(predicate))}; last seen {seen}"
        )

    def wait_about(
        self, object_id: str, event_type: str, count: int = 1, timeout: float = 5.0
    ) -> list[Received]:
        return self.wait_for(
            lambda r: r.object_id == object_id and r.type == event_type, count, timeout
        )

    async def wait_about_async(
        self, object_id: str, event_type: str, count: int = 1, timeout: float = 5.0
    ) -> list[Received]:
        return await asyncio.to_thread(self.wait_about, object_id, event_type, count, timeout)


ProviderReceiver = WebhookReceiver
