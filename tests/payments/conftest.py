"""Fixtures for the payments tests: the Stripe sandbox and the payments service as real processes,
a webhook relay standing in for the gateway (raw body + Stripe-Signature -> HandleProviderEvent),
and gRPC stubs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay_dev.sandbox_client import SandboxAdmin
from hirepay_dev.services import RunningService
from tests.support.payments_helpers import OLD_WEBHOOK_SECRET, WEBHOOK_SECRET
from tests.support.service_auth import signed_aio_channel
from tests.support.stripe_stack import start_payments, start_stripe_sandbox
from tests.support.webhook_relay import WebhookRelay

PROVIDER_TIMEOUT = 1.5


@pytest.fixture(scope="session")
def relay() -> Iterator[WebhookRelay]:
    server = WebhookRelay().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sandbox_url(relay: WebhookRelay) -> Iterator[str]:
    process, url = start_stripe_sandbox("payments-sandbox", relay.url, WEBHOOK_SECRET)
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
    service = start_payments(
        url,
        sandbox_url,
        api_key="sk_test_paymentstests",
        webhook_secrets=f"{WEBHOOK_SECRET},{OLD_WEBHOOK_SECRET}",
        provider_timeout=PROVIDER_TIMEOUT,
        log_name="payments-tests",
        PAYMENTS_LOG_LEVEL="INFO",
        PAYMENTS_WALLET_TARGET="",  # no wallet here: purchases stay owed to the ledger
        # Payments waiting for the provider are re-fetched within a second (lost webhooks).
        PAYMENTS_WATCH_INTERVAL_SECONDS="0.2",
        PAYMENTS_WATCH_MAX_INTERVAL_SECONDS="1",
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
