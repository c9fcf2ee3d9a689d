"""Fixtures for the Fatora sandbox tests: the sandbox as a real process with a webhook
receiver, an HTTP client with the merchant api_key, and the admin client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from hirepay_dev.provider_sandboxes import KitAdmin
from tests.support.fatora_support import WEBHOOK_SECRET, api
from tests.support.kit_sandbox import sandbox_for_tests
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
    with sandbox_for_tests("fatora_sandbox", fatora_receiver, WEBHOOK_SECRET, 4) as url:
        yield url


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
