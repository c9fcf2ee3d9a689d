"""A receiver of Hirepay's signed callbacks (hirepay_platform.notifier): an HTTP server in a
thread that checks each body's `X-Hirepay-Signature` and records it; it can refuse the first
deliveries to prove retries."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hirepay_dev.procs import free_port
from hirepay_platform.notifier import SIGNATURE_HEADER, verify


class CallbackReceiver:
    """Records `(body, signature_ok)` of every accepted delivery; the first `fail_first`
    deliveries are answered 503 and not recorded."""

    def __init__(self, secret: str, *, fail_first: int = 0, path: str = "/events") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{path}"
        self.received: list[tuple[dict[str, Any], bool]] = []
        self.idempotency_keys: list[str] = []
        self.fail_first = fail_first
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ok = verify(body, self.headers.get(SIGNATURE_HEADER, ""), [secret])
                with receiver._lock:
                    refuse = receiver.fail_first > 0
                    if refuse:
                        receiver.fail_first -= 1
                    else:
                        receiver.received.append((json.loads(body), ok))
                        receiver.idempotency_keys.append(self.headers.get("Idempotency-Key", ""))
                self.send_response(503 if refuse else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [body for body, _ in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
