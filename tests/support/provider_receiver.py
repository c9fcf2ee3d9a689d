"""A webhook receiver for the provider sandbox tests: an HTTP server in a thread that records
every delivery (headers and exact body) and can answer errors for chosen objects."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hirepay_dev.procs import free_port


@dataclass
class Delivery:
    """One webhook POST as the receiver saw it."""

    headers: dict[str, str]
    body: bytes
    answered: int
    event_type: str
    object_id: str

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)
        return event

    def header(self, name: str) -> str:
        lowered = {k.lower(): v for k, v in self.headers.items()}
        return lowered[name.lower()]


# Reads (event type, object id) from a provider's webhook body.
Describe = Callable[[dict[str, Any]], tuple[str, str]]


class ProviderReceiver:
    """A tiny HTTP server recording webhook deliveries; can answer errors for chosen objects."""

    def __init__(self, describe: Describe) -> None:
        self.describe = describe
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/webhooks"
        self.received: list[Delivery] = []
        # (object id, event type or None) -> status codes to answer first
        self._failures: dict[tuple[str, str | None], list[int]] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    event_type, object_id = receiver.describe(json.loads(body))
                except (ValueError, KeyError, TypeError):
                    event_type, object_id = "?", "?"
                with receiver._lock:
                    status = receiver._answer_for(object_id, event_type)
                    receiver.received.append(
                        Delivery(dict(self.headers.items()), body, status, event_type, object_id)
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> ProviderReceiver:
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

    def about(self, object_id: str, event_type: str | None = None) -> list[Delivery]:
        with self._lock:
            return [
                d
                for d in self.received
                if d.object_id == object_id and (event_type is None or d.event_type == event_type)
            ]

    def wait_about(
        self, object_id: str, event_type: str, count: int = 1, timeout: float = 5.0
    ) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.about(object_id, event_type)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        seen = [(d.event_type, d.object_id) for d in self.received[-10:]]
        raise AssertionError(
            f"expected {count} {event_type} webhook(s) about {object_id}, got "
            f"{len(self.about(object_id, event_type))}; last seen {seen}"
        )
