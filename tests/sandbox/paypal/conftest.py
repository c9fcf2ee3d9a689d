"""Fixtures for the PayPal sandbox tests: the sandbox as a real process with a webhook
receiver, the official `paypal-server-sdk` pointed at it, and the admin client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from paypalserversdk.paypal_serversdk_client import PaypalServersdkClient

from hirepay_dev.provider_sandboxes import KitAdmin, paypal_client
from tests.support.kit_sandbox import sandbox_for_tests
from tests.support.paypal_support import MAX_ATTEMPTS, WEBHOOK_ID, WEBHOOK_SECRET
from tests.support.webhook_receiver import ProviderReceiver


def _describe(event: dict[str, Any]) -> tuple[str, str]:
    resource = event["resource"]  # a dispute is named by its `dispute_id`
    return str(event["event_type"]), str(resource.get("id") or resource.get("dispute_id"))


@pytest.fixture(scope="session")
def paypal_receiver() -> Iterator[ProviderReceiver]:
    server = ProviderReceiver(_describe).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def paypal_url(paypal_receiver: ProviderReceiver) -> Iterator[str]:
    with sandbox_for_tests(
        "paypal_sandbox", paypal_receiver, WEBHOOK_SECRET, MAX_ATTEMPTS, WEBHOOK_ID=WEBHOOK_ID
    ) as url:
        yield url


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
