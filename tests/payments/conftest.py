"""Fixtures for the payments tests: the Stripe sandbox and the payments service as real processes,
a webhook relay standing in for the gateway (raw body + Stripe-Signature -> HandleProviderEvent),
and gRPC stubs."""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay_dev.procs import free_port
from hirepay_dev.sandbox_client import SandboxAdmin, start_sandbox
from hirepay_dev.services import PAYMENTS, RunningService, start_service
from tests.support.payments_helpers import OLD_WEBHOOK_SECRET, WEBHOOK_SECRET
from tests.support.service_auth import signed_aio_channel, signed_channel

PROVIDER_TIMEOUT = 1.5


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
        return f"http://127.0.0.1:{self.port}/webhook/stripe"

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


@pytest.fixture(scope="session")
def relay() -> Iterator[WebhookRelay]:
    server = WebhookRelay().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sandbox_url(relay: WebhookRelay) -> Iterator[str]:
    process, url = start_sandbox(
        name="payments-sandbox",
        env={
            "SANDBOX_WEBHOOK_URL": relay.url,
            "SANDBOX_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "SANDBOX_WEBHOOK_RETRY_BASE": "0.2",
            "SANDBOX_WEBHOOK_RETRY_MAX_DELAY": "1",
            "SANDBOX_WEBHOOK_MAX_ATTEMPTS": "30",
        },
    )
    yield url
    process.stop()


@pytest.fixture(scope="session")
def admin(sandbox_url: str) -> Iterator[SandboxAdmin]:
    client = SandboxAdmin(sandbox_url)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _no_faults_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests that use the sandbox start and end without armed faults."""
    if "admin" not in request.fixturenames:
        yield
        return
    admin: SandboxAdmin = request.getfixturevalue("admin")
    admin.clear_faults()
    yield
    admin.clear_faults()


@pytest.fixture(scope="session")
def payments_service(
    make_service_database: Callable[[str], str], sandbox_url: str, relay: WebhookRelay
) -> Iterator[RunningService]:
    url = make_service_database("payments")
    service = start_service(
        PAYMENTS,
        url,
        env={
            "PAYMENTS_STRIPE_API_BASE": sandbox_url,
            "PAYMENTS_STRIPE_API_KEY": "sk_test_paymentstests",
            "PAYMENTS_STRIPE_WEBHOOK_SECRETS": f"{WEBHOOK_SECRET},{OLD_WEBHOOK_SECRET}",
            "PAYMENTS_PROVIDER_TIMEOUT_SECONDS": str(PROVIDER_TIMEOUT),
            "PAYMENTS_POLL_INTERVAL_SECONDS": "0.2",
            "PAYMENTS_POLL_MAX_INTERVAL_SECONDS": "0.5",
            # Payments waiting for the provider are re-fetched within a second (lost webhooks).
            "PAYMENTS_WATCH_INTERVAL_SECONDS": "0.2",
            "PAYMENTS_WATCH_MAX_INTERVAL_SECONDS": "1",
            "PAYMENTS_LOG_LEVEL": "INFO",
            "PAYMENTS_WALLET_TARGET": "",  # no wallet here: purchases stay owed to the ledger
        },
        log_name="payments-tests",
    )
    relay.target = service.target
    yield service
    relay.target = ""
    service.stop()


@pytest.fixture(scope="session")
async def stub(payments_service: RunningService) -> AsyncIterator[pb_grpc.PaymentsServiceStub]:
    channel = signed_aio_channel(payments_service.target, caller="jobs", service="payments")
    yield pb_grpc.PaymentsServiceStub(channel)
    await channel.close()


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Fresh ids per test so tests sharing one service never collide."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    return make
