"""Test harnesses of the payment providers for the provider contract suite
(tests/payments/contract): each starts its provider's offline sandbox, builds the production
adapter against it, and pays a checkout the way a customer would on the provider's page.

A fifth provider is proven by adding one harness here: the suite runs every test for each.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from hirepay_dev.procs import Process, free_port
from hirepay_dev.provider_sandboxes import (
    FATORA_API_KEY,
    PAYPAL_CLIENT_ID,
    PAYPAL_CLIENT_SECRET,
    RAZORPAY_KEY_ID,
    RAZORPAY_KEY_SECRET,
    start_provider_sandbox,
)
from hirepay_dev.sandbox_client import DEFAULT_API_KEY, start_sandbox
from payments.adapters.blocking import BlockingCalls
from payments.adapters.fatora_provider import FatoraProvider
from payments.adapters.paypal_provider import PayPalProvider
from payments.adapters.razorpay_provider import RazorpayProvider
from payments.adapters.stripe_provider import StripeProvider
from payments.domain.provider import PaymentProvider, ProviderCheckout
from tests.support.razorpay_support import pay_by_card

WEBHOOK_SECRET = "contract-webhook-secret"
STRIPE_WEBHOOK_SECRET = "whsec_contract_suite"
PAYPAL_WEBHOOK_ID = "CONTRACTWEBHOOK0001"
SUCCESS_URL = "https://app.example/ok?session_id={CHECKOUT_SESSION_ID}"
CANCEL_URL = "https://app.example/cancel"
TIMEOUT = 2.0  # the adapters' provider deadline in the suite (the timeout faults outlast it)


class Receiver:
    """Records every webhook delivery (exact body, lower-cased headers)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/webhooks"
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()


@dataclass
class Running:
    """A harness's sandbox, admin client and adapter."""

    process: Process
    base_url: str
    provider: PaymentProvider
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=15.0))

    def add_fault(self, kind: str, **spec: Any) -> None:
        self.http.post(f"{self.base_url}/_sandbox/faults", json={"kind": kind, **spec})

    def clear_faults(self) -> None:
        self.http.delete(f"{self.base_url}/_sandbox/faults")


def _query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@dataclass(frozen=True)
class Harness:
    """How to run one provider in the contract suite, and what it can do."""

    name: str
    currency: str
    amount: int
    manual_capture: bool  # authorize on the page, capture or void later
    partial_refund: bool
    checkout_path: str  # the API path that creates a checkout (for faults)
    start: Callable[[str], Running]
    pay: Callable[[Running, ProviderCheckout, bool], dict[str, str]]

    def new_key(self) -> str:
        return f"contract-{self.name}-{uuid.uuid4().hex[:12]}"


# --- Stripe ------------------------------------------------------------------------------------


def _start_stripe(webhook_url: str) -> Running:
    process, url = start_sandbox(
        "contract-stripe",
        env={"SANDBOX_WEBHOOK_URL": webhook_url, "SANDBOX_WEBHOOK_SECRET": STRIPE_WEBHOOK_SECRET},
    )
    provider = StripeProvider(
        DEFAULT_API_KEY, api_base=url, webhook_secrets=[STRIPE_WEBHOOK_SECRET], timeout=TIMEOUT
    )
    return Running(process, url, provider)


def _pay_stripe(run: Running, checkout: ProviderCheckout, succeed: bool) -> dict[str, str]:
    card = "4242 4242 4242 4242" if succeed else "4000 0000 0000 0002"
    form = {"card_number": card, "exp": "12 / 34", "cvc": "123"}
    answer = run.http.post(f"{checkout.url.rstrip('/')}/pay", data=form)
    if not succeed:
        assert answer.status_code in (200, 402), answer.text
        return {"session_id": checkout.id}
    assert answer.status_code == 303, answer.text
    return _query(answer.headers["location"])


# --- PayPal ------------------------------------------------------------------------------------


def _start_paypal(webhook_url: str) -> Running:
    process, url = start_provider_sandbox(
        "paypal_sandbox",
        name="contract-paypal",
        env={
            "PAYPAL_SANDBOX_WEBHOOK_URL": webhook_url,
            "PAYPAL_SANDBOX_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "PAYPAL_SANDBOX_WEBHOOK_ID": PAYPAL_WEBHOOK_ID,
        },
    )
    provider = PayPalProvider(
        PAYPAL_CLIENT_ID,
        PAYPAL_CLIENT_SECRET,
        BlockingCalls(4, TIMEOUT),
        api_base=url,
        webhook_id=PAYPAL_WEBHOOK_ID,
    )
    return Running(process, url, provider)


def _pay_paypal(run: Running, checkout: ProviderCheckout, succeed: bool) -> dict[str, str]:
    assert run.http.get(checkout.url).status_code == 200
    answer = run.http.post(
        f"{run.base_url}/checkoutnow/{checkout.id}/approve",
        data={"funding": "balance" if succeed else "declined"},
    )
    assert answer.status_code == 303, answer.text
    return _query(answer.headers["location"])


# --- Razorpay ----------------------------------------------------------------------------------


def _start_razorpay(webhook_url: str) -> Running:
    process, url = start_provider_sandbox(
        "razorpay_sandbox",
        name="contract-razorpay",
        env={
            "RAZORPAY_SANDBOX_WEBHOOK_URL": webhook_url,
            "RAZORPAY_SANDBOX_WEBHOOK_SECRET": WEBHOOK_SECRET,
        },
    )
    provider = RazorpayProvider(
        RAZORPAY_KEY_ID,
        RAZORPAY_KEY_SECRET,
        BlockingCalls(4, TIMEOUT),
        api_base=url,
        webhook_secret=WEBHOOK_SECRET,
    )
    return Running(process, url, provider)


def _pay_razorpay(run: Running, checkout: ProviderCheckout, succeed: bool) -> dict[str, str]:
    callback = _query(checkout.url)["callback_url"]
    action = "success" if succeed else "failure"
    return pay_by_card(run.base_url, checkout.id, action, callback_url=callback)


# --- Fatora ------------------------------------------------------------------------------------


def _start_fatora(webhook_url: str) -> Running:
    process, url = start_provider_sandbox(
        "fatora_sandbox",
        name="contract-fatora",
        env={
            "FATORA_SANDBOX_WEBHOOK_URL": webhook_url,
            "FATORA_SANDBOX_WEBHOOK_SECRET": WEBHOOK_SECRET,
        },
    )
    provider = FatoraProvider(
        FATORA_API_KEY, api_base=url, webhook_secret=WEBHOOK_SECRET, timeout=TIMEOUT
    )
    return Running(process, url, provider)


def _pay_fatora(run: Running, checkout: ProviderCheckout, succeed: bool) -> dict[str, str]:
    assert run.http.get(checkout.url).status_code == 200
    payment_id = _query(checkout.url)["paymentID"]
    parts = urlsplit(checkout.url)
    answer = run.http.post(
        f"{parts.scheme}://{parts.netloc}/pay/{payment_id}/pay",
        data={
            "card_number": "5123 4500 0000 0008",
            "expiry": "01/39" if succeed else "05/39",
            "cvv": "123",
        },
    )
    assert answer.status_code == 303, answer.text
    return _query(answer.headers["location"])


HARNESSES: dict[str, Harness] = {
    h.name: h
    for h in (
        Harness(
            "stripe", "USD", 2500, True, True, "/v1/checkout/sessions", _start_stripe, _pay_stripe
        ),
        Harness(
            "paypal", "USD", 2500, True, True, "/v2/checkout/orders", _start_paypal, _pay_paypal
        ),
        Harness("razorpay", "INR", 50000, True, True, "/v1/orders", _start_razorpay, _pay_razorpay),
        Harness(
            "fatora",
            "KWD",
            12345,
            False,
            False,
            "/v1/payments/checkout",
            _start_fatora,
            _pay_fatora,
        ),
    )
}


@contextmanager
def running(harness: Harness, receiver: Receiver) -> Iterator[Running]:
    run = harness.start(receiver.url)
    try:
        yield run
    finally:
        run.http.close()
        run.process.stop()
