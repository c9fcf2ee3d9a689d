"""Fixtures for the PayPal sandbox tests: the sandbox as a real process with a webhook
receiver, the official `paypal-server-sdk` pointed at it, and the admin client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from paypalserversdk.paypal_serversdk_client import PaypalServersdkClient

from hirepay_dev.provider_sandboxes import KitAdmin, paypal_client, start_provider_sandbox
from tests.support.paypal_support import MAX_ATTEMPTS, WEBHOOK_ID, WEBHOOK_SECRET
from tests.support.webhook_receiver import ProviderReceiver


def _describe(event: dict[str, Any]) -> tuple[str, str]:
    return str(event["event_type"]), str(event["resource"]["id"])


@pytest.fixture(scope="session")
def paypal_receiver() -> Iterator[ProviderReceiver]:
    server = ProviderReceiver(_describe).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def paypal_url(paypal_receiver: ProviderReceiver) -> Iterator[str]:
    process, url = start_provider_sandbox(
        "paypal_sandbox",
        name="paypal-sandbox-tests",
        env={
            "PAYPAL_SANDBOX_WEBHOOK_URL": paypal_receiver.url,
            "PAYPAL_SANDBOX_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "PAYPAL_SANDBOX_WEBHOOK_ID": WEBHOOK_ID,
            "PAYPAL_SANDBOX_WEBHOOK_RETRY_BASE": "0.05",
            "PAYPAL_SANDBOX_WEBHOOK_RETRY_MAX_DELAY": "0.2",
            "PAYPAL_SANDBOX_WEBHOOK_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        },
    )
    yield url
    process.stop()


@pytest.fixture(scope="session")
def paypal_admin(paypal_url: str) -> Iterator[KitAdmin]:
    client = KitAdmin(paypal_url)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _no_faults_left(paypal_admin: KitAdmin) -> Iterator[None]:
    """Every test starts and ends without armed faults (replaces the Stripe sandbox's own)."""
    paypal_admin.clear_faults()
    yield
    paypal_admin.clear_faults()


@pytest.fixture(scope="session")
def paypal(paypal_url: str) -> PaypalServersdkClient:
    """The official SDK as the payments service would configure it."""
    return paypal_client(paypal_url)
