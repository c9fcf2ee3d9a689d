"""Fixtures for the Razorpay sandbox tests: the sandbox as a real process with a webhook
receiver, the official `razorpay` client pointed at it, and the admin client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import razorpay

from hirepay_dev.provider_sandboxes import KitAdmin, razorpay_client
from tests.support.kit_sandbox import sandbox_for_tests
from tests.support.razorpay_support import MAX_ATTEMPTS, WEBHOOK_SECRET
from tests.support.webhook_receiver import ProviderReceiver


def _describe(event: dict[str, Any]) -> tuple[str, str]:
    first = event["contains"][0]
    return str(event["event"]), str(event["payload"][first]["entity"]["id"])


@pytest.fixture(scope="session")
def razorpay_receiver() -> Iterator[ProviderReceiver]:
    server = ProviderReceiver(_describe).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def razorpay_url(razorpay_receiver: ProviderReceiver) -> Iterator[str]:
    with sandbox_for_tests(
        "razorpay_sandbox", razorpay_receiver, WEBHOOK_SECRET, MAX_ATTEMPTS
    ) as url:
        yield url


@pytest.fixture(scope="session")
def razorpay_admin(razorpay_url: str) -> Iterator[KitAdmin]:
    client = KitAdmin(razorpay_url)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _no_faults_left(razorpay_admin: KitAdmin) -> Iterator[None]:
    """Every test starts and ends without armed faults (replaces the Stripe sandbox's own)."""
    razorpay_admin.clear_faults()
    yield
    razorpay_admin.clear_faults()


@pytest.fixture(scope="session")
def rzp(razorpay_url: str) -> razorpay.Client:
    """The official SDK as the payments service would configure it."""
    return razorpay_client(razorpay_url)
