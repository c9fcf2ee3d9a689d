"""A card posting's two Stripe requests (authorize, capture) cost the SDK's own floor and little
more (issue 13, pay17): Python calls counted, built-ins included, through the adapter with a
recording HTTP client (the SDK's documented extension point), so the network and the pool are
not counted.

Round 17 measured where the ~920 and ~420 calls go, with stripe 16.1.0: urllib's form encoding
of the authorize's parameters ~400 (each key with brackets, `metadata[...]` and
`payment_method_types[0]`, is quoted byte by byte: ~180 calls), five log lines per request
formatted whether or not anything logs them (`stripe._util.logfmt`, ~200 per request), the
SDK's own parameter encoding ~100, its AI-agent detection reading 12 environment variables per
request (~60). None has a public switch (`stripe.log` and the `stripe` logger's level only
decide whether the formatted line is written; `app_info` adds to the user agent), and patching
the SDK is not an option: the pins below keep the adapter's part (and anything a change around
the SDK would add: telemetry, StripeObject trees, a second parse) from growing unseen."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import stripe

from payments.adapters.stripe_provider import StripeProvider
from payments.domain.provider import AuthorizeRequest, ProviderStatus
from tests.support.python_calls import calls_made, entered, of_package

_INTENT = {
    "id": "pi_1", "object": "payment_intent", "status": "requires_capture", "amount": 14900,
    "currency": "usd", "amount_capturable": 14900, "metadata": {"hirepay_payment_id": "pay_1"},
}  # fmt: skip
# What a card posting's Authorize sends (jobs' metadata and the payment's id).
_REQUEST = AuthorizeRequest(
    amount_minor=14900,
    currency="USD",
    payment_method="pm_card_visa",
    manual_capture=True,
    description="",
    metadata={
        "hirepay_payment_id": "pay_1",
        "subsystem": "jobs",
        "type": "job_posting",
        "job_id": "job_1",
        "saga_id": "saga_1",
    },
)
# Measured 919 and 420 (stripe 16.1.0, no AI-agent variable set: with one set the SDK stops
# looking at it, fewer calls).
AUTHORIZE_CALLS = 930
CAPTURE_CALLS = 430
# The adapter's own functions entered per capture: the operation, _path_id, _run, intent_from
# and its helpers (_id, _str_map and its comprehension).
ADAPTER_FUNCTIONS = 7


class _Recorder(stripe.HTTPClient):
    """Answers every request with a PaymentIntent at once."""

    name = "recorder"

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, Any]] = []
        self._answer = json.dumps(_INTENT).encode()

    def request(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, dict[str, str]]:
        self.sent.append((url, post_data))
        return self._answer, 200, {"Request-Id": f"req_{len(self.sent)}"}

    async def close_async(self) -> None:
        return None


def _provider() -> tuple[StripeProvider, _Recorder]:
    recorder = _Recorder()
    provider = StripeProvider("sk_test_x")
    provider.client = stripe.StripeClient("sk_test_x", http_client=recorder, max_network_retries=0)
    return provider, recorder


async def _count(make: Any) -> int:
    """Python calls (built-ins included) of one awaited call, after a first one."""
    await make()
    done: list[Any] = []

    async def once() -> None:
        done.append(await make())

    coroutine = once()
    calls = calls_made(lambda: _drive(coroutine))
    assert done, "the call did not finish without waiting"
    return calls


def _drive(coroutine: Any) -> None:
    """Run a coroutine that never waits to its end, in the caller's frame."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    raise AssertionError("the call waited")


async def test_the_authorize_and_the_capture_cost_the_sdks_floor() -> None:
    provider, recorder = _provider()
    authorize = await _count(lambda: provider.authorize(_REQUEST, "key-a"))
    capture = await _count(lambda: provider.capture("pi_1", 0, "key-c"))
    assert authorize <= AUTHORIZE_CALLS, authorize
    assert capture <= CAPTURE_CALLS, capture
    url, body = recorder.sent[1]  # (the counted authorize, after the first)
    assert url.endswith("/v1/payment_intents")
    assert "metadata[hirepay_payment_id]=pay_1" in body and "capture_method=manual" in body
    assert recorder.sent[-1][0].endswith("/v1/payment_intents/pi_1/capture")


async def test_the_adapter_adds_a_few_functions_around_the_sdk() -> None:
    provider, _ = _provider()
    await provider.capture("pi_1", 0, "key-0")
    with entered() as seen:
        payment = await provider.capture("pi_1", 0, "key-1")
    assert payment.status is ProviderStatus.AUTHORIZED
    own = of_package(seen, "adapters")
    assert len(own) <= ADAPTER_FUNCTIONS, sorted(own)
    # One request, its JSON parsed once by the SDK, no StripeObject built from it.
    assert of_package(seen, "stripe").count("raw_request_async") == 1
    assert "_convert_to_stripe_object" not in of_package(seen, "stripe")
