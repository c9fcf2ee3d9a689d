"""The Stripe adapter turns the SDK's request telemetry off (issue 13, paywh15): with it on,
every request read the SDK's telemetry id, asked `platform` for the OS and, from the second
request on, sent the previous request's id and duration as an X-Stripe-Client-Telemetry JSON
header (~15 Python calls per request, two requests per card posting). The requests are otherwise
the same: the same path, body, idempotency key and authorization. `telemetry=True` turns it
back on (`stripe.enable_telemetry`, the SDK's documented switch)."""

from __future__ import annotations

import json
import pstats
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import stripe

from payments.adapters.stripe_provider import StripeProvider
from tests.support.python_calls import profiled

_INTENT = {
    "id": "pi_1", "object": "payment_intent", "status": "requires_capture", "amount": 14900,
    "currency": "usd", "amount_capturable": 14900, "metadata": {"hirepay_payment_id": "pay_1"},
}  # fmt: skip


class _Recorder(stripe.HTTPClient):
    """An HTTP client (the SDK's documented extension point) that answers every request with a
    PaymentIntent and keeps the headers each request was sent with."""

    name = "recorder"

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, dict[str, str], Any]] = []

    def request(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, dict[str, str]]:
        self.sent.append((url, dict(headers), post_data))
        return json.dumps(_INTENT).encode(), 200, {"Request-Id": f"req_{len(self.sent)}"}

    async def close_async(self) -> None:
        return None


@pytest.fixture(autouse=True)
def _telemetry_restored() -> Iterator[None]:
    before = stripe.enable_telemetry
    yield
    stripe.enable_telemetry = before


def _provider(recorder: _Recorder, **kwargs: Any) -> StripeProvider:
    provider = StripeProvider("sk_test_x", **kwargs)
    provider.client = stripe.StripeClient("sk_test_x", http_client=recorder, max_network_retries=0)
    return provider


async def _captures(provider: StripeProvider, n: int) -> None:
    for i in range(n):
        await provider.capture("pi_1", 0, f"key-{i}")


async def test_requests_carry_no_telemetry() -> None:
    recorder = _Recorder()
    provider = _provider(recorder)
    await _captures(provider, 3)
    for url, headers, _ in recorder.sent:
        assert url.endswith("/v1/payment_intents/pi_1/capture")
        assert "X-Stripe-Client-Telemetry" not in headers, headers
        agent = json.loads(headers["X-Stripe-Client-User-Agent"])
        assert "telemetry_id" not in agent and "platform" not in agent, agent
    assert [h["Idempotency-Key"] for _, h, _ in recorder.sent] == ["key-0", "key-1", "key-2"]
    assert all(h["Authorization"] == "Bearer sk_test_x" for _, h, _ in recorder.sent)


async def test_a_request_runs_none_of_the_sdks_telemetry() -> None:
    provider = _provider(_Recorder())
    await _captures(provider, 1)  # (a previous request's metrics would be sent with the next)
    with profiled() as profile:
        await _captures(provider, 1)
    called = {
        (file.rsplit("/", 1)[-1], name)
        for (file, _, name) in pstats.Stats(profile).stats  # type: ignore[attr-defined]
    }
    telemetry = {
        ("_telemetry_id.py", "get_telemetry_id"),
        ("platform.py", "platform"),
        ("_request_metrics.py", "payload"),
        ("_request_metrics.py", "__init__"),
    }
    assert not called & telemetry, called & telemetry
    assert ("_api_requestor.py", "request_headers") in called  # the SDK's own request, as before


async def test_telemetry_can_be_turned_back_on() -> None:
    recorder = _Recorder()
    provider = _provider(recorder, telemetry=True)
    await _captures(provider, 2)
    last = recorder.sent[-1][1]
    metrics = json.loads(last["X-Stripe-Client-Telemetry"])["last_request_metrics"]
    assert metrics["request_id"] == "req_1"
