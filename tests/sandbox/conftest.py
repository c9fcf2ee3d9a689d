"""Fixtures for the Stripe sandbox tests: the sandbox as a real process, a webhook receiver,
the official SDK pointed at the sandbox, and the admin client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import stripe

from hirepay_dev.sandbox_client import SandboxAdmin, stripe_client
from tests.support.stripe_settings import MAX_ATTEMPTS, WEBHOOK_SECRET
from tests.support.stripe_stack import start_stripe_sandbox
from tests.support.webhook_receiver import WebhookReceiver

HERE = Path(__file__).parent

# stripe-python's HTTPXClient posts the form as `data=<str>`, which httpx deprecates; not ours.
_SDK_WARNING = "ignore:Use 'content=<...>' to upload raw bytes/text content.:DeprecationWarning"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.filterwarnings(_SDK_WARNING))


@pytest.fixture(scope="session")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sandbox_url(receiver: WebhookReceiver) -> Iterator[str]:
    process, url = start_stripe_sandbox(
        "sandbox-tests",
        receiver.url,
        WEBHOOK_SECRET,
        retry_base=0.05,
        retry_max_delay=0.2,
        max_attempts=MAX_ATTEMPTS,
        SANDBOX_PAYOUT_SETTLE_AFTER="0.1",
    )
    yield url
    process.stop()


@pytest.fixture(scope="session")
def admin(sandbox_url: str) -> Iterator[SandboxAdmin]:
    client = SandboxAdmin(sandbox_url)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _no_faults_left(admin: SandboxAdmin) -> Iterator[None]:
    """Every test starts and ends without armed faults."""
    admin.clear_faults()
    yield
    admin.clear_faults()


@pytest.fixture(scope="session")
def client(sandbox_url: str) -> stripe.StripeClient:
    """The SDK as the payments service configures it (async methods)."""
    return stripe_client(sandbox_url)


@pytest.fixture(scope="session")
def sync_client(sandbox_url: str) -> stripe.StripeClient:
    """The SDK with synchronous methods enabled."""
    return stripe_client(sandbox_url, allow_sync=True)
