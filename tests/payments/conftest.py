"""Fixtures for the payments tests: the Stripe sandbox and the payments service as real processes,
a webhook relay standing in for the gateway (raw body + Stripe-Signature -> HandleProviderEvent),
and gRPC stubs."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest

from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay_dev.procs import free_port
from hirepay_dev.sandbox_client import SandboxAdmin
from hirepay_dev.services import RunningService
from tests.support.payments_helpers import OLD_WEBHOOK_SECRET, WEBHOOK_SECRET
from tests.support.service_auth import signed_aio_channel
from tests.support.startup import start_together
from tests.support.stripe_stack import start_payments, start_stripe_sandbox
from tests.support.webhook_relay import WebhookRelay

PROVIDER_TIMEOUT = 1.5


@pytest.fixture(scope="session")
def relay() -> Iterator[WebhookRelay]:
    server = WebhookRelay().start()
    yield server
    server.stop()


@dataclass(frozen=True)
class StripeSide:
    sandbox_url: str
    payments: RunningService


@pytest.fixture(scope="session")
def stripe_side(
    make_service_database: Callable[[str], str], relay: WebhookRelay
) -> Iterator[StripeSide]:
    """The sandbox and the payments service, started side by side: the sandbox's port is chosen
    up front, and payments only calls the sandbox once it has work (its readiness is its
    database), so neither waits for the other. A failed start stops the other (start_together)."""
    sandbox_port = free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    with contextlib.ExitStack() as cleanup:
        _sandbox, service = start_together(
            cleanup,
            (
                lambda: start_stripe_sandbox(
                    "payments-sandbox", relay.url, WEBHOOK_SECRET, port=sandbox_port
                ),
                lambda started: started[0].stop(),
            ),
            (
                lambda: start_payments(
                    make_service_database("payments"),
                    sandbox_url,
                    api_key="sk_test_paymentstests",
                    webhook_secrets=f"{WEBHOOK_SECRET},{OLD_WEBHOOK_SECRET}",
                    provider_timeout=PROVIDER_TIMEOUT,
                    log_name="payments-tests",
                    PAYMENTS_LOG_LEVEL="INFO",
                    PAYMENTS_WALLET_TARGET="",  # no wallet here: purchases stay owed to the ledger
                    # Payments waiting for the provider are re-fetched within a second (lost
                    # webhooks).
                    PAYMENTS_WATCH_INTERVAL_SECONDS="0.2",
                    PAYMENTS_WATCH_MAX_INTERVAL_SECONDS="1",
                ),
                lambda started: started.stop(),
            ),
        )
        relay.target = service.target
        cleanup.callback(setattr, relay, "target", "")
        yield StripeSide(sandbox_url, service)


@pytest.fixture(scope="session")
def sandbox_url(stripe_side: StripeSide) -> str:
    return stripe_side.sandbox_url


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
def payments_service(stripe_side: StripeSide) -> RunningService:
    return stripe_side.payments


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
