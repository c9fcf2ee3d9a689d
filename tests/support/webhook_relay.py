"""A webhook relay standing in for the gateway in the payments and jobs tests: each Stripe sandbox
delivery is forwarded, raw body and Stripe-Signature, to payments' HandleProviderEvent."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay_dev.procs import free_port
from tests.support.service_auth import signed_channel


class WebhookRelay:
    """An HTTP endpoint for the sandbox's webhooks that forwards each delivery, byte for byte, to
    the payments service and answers as the gateway would (2xx applied, 400 bad signature, 503
    to be retried)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.target = ""
        self.statuses: list[int] = []
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = relay.forward(body, self.headers.get("Stripe-Signature", ""))
                relay.statuses.append(status)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks/stripe"

    def forward(self, body: bytes, signature: str) -> int:
        if not self.target:
            return 503
        with signed_channel(self.target, caller="gateway", service="payments") as channel:
            stub = pb_grpc.PaymentsServiceStub(channel)
            try:
                stub.HandleProviderEvent(
                    pb.HandleProviderEventRequest(
                        provider="stripe", payload=body, signature=signature
                    ),
                    timeout=10,
                )
            except grpc.RpcError as exc:
                return 400 if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else 503
        return 200

    def start(self) -> WebhookRelay:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
