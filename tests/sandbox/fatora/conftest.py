"""Fixtures for the Fatora sandbox tests: the sandbox as a real process with a webhook
receiver, an HTTP client with the merchant api_key, and the admin client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from hirepay_dev.provider_sandboxes import KitAdmin, start_provider_sandbox
from tests.support.fatora_support import WEBHOOK_SECRET, api
from tests.support.webhook_receiver import ProviderReceiver


def _describe(event: dict[str, Any]) -> tuple[str, str]:
    return str(event["event"]), str(event["result"]["order_id"])


@pytest.fixture(scope="session")
def fatora_receiver() -> Iterator[ProviderReceiver]:
    server = ProviderReceiver(_describe).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fatora_url(fatora_receiver: ProviderReceiver) -> Iterator[str]:
    process, url = start_provider_sandbox(
        "fatora_sandbox",
        name="fatora-sandbox-tests",
        env={
            "FATORA_SANDBOX_WEBHOOK_URL": fatora_receiver.url,
            "FATORA_SANDBOX_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "FATORA_SANDBOX_WEBHOOK_RETRY_BASE": "0.05",
            "FATORA_SANDBOX_WEBHOOK_RETRY_MAX_DELAY": "0.2",
            "FATORA_SANDBOX_WEBHOOK_MAX_ATTEMPTS": "4",
        },
    )
    yield url
    process.stop()


@pytest.fixture(scope="session")
def fatora_admin(fatora_url: str) -> Iterator[KitAdmin]:
    client = KitAdmin(fatora_url)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _no_faults_left(fatora_admin: KitAdmin) -> Iterator[None]:
    """Every test starts and ends without armed faults (replaces the Stripe sandbox's own)."""
    fatora_admin.clear_faults()
    yield
    fatora_admin.clear_faults()


@pytest.fixture(scope="session")
def fatora(fatora_url: str) -> Iterator[httpx.Client]:
    client = api(fatora_url)
    yield client
    client.close()
