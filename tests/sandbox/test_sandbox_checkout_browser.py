"""The hosted checkout pages in a real browser: Debian's Chromium, driven by Playwright, pays with
4242 4242 4242 4242, is declined with 4000 0000 0000 0002 (then retries), and cancels. Each
outcome is checked where it matters: the session, PaymentIntent and events read back through the
official SDK, not only the page text."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe
from playwright.sync_api import Browser, Page, Route, sync_playwright

from hirepay_dev.procs import free_port
from tests.support.webhook_receiver import WebhookReceiver

CHROMIUM = Path("/usr/bin/chromium")
# As the machine notes say: headless, no sandbox as root, and no background traffic (the
# machine has no network beyond loopback).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The shop the buyer returns to: requests there are answered by the test (route), never sent.
SHOP = f"http://127.0.0.1:{free_port()}"
SUCCESS_URL = SHOP + "/paid?session={CHECKOUT_SESSION_ID}"
CANCEL_URL = SHOP + "/canceled"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # A missing browser is a failure: `make test` installs it (make system-deps).
    assert CHROMIUM.exists(), "Chromium missing: run `make system-deps` (tools/system_deps.sh)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, sandbox_url: str) -> Iterator[Page]:
    context = browser.new_context()

    def route(route: Route) -> None:
        url = route.request.url
        if url.startswith(SHOP):
            route.fulfill(status=200, content_type="text/html", body="<h1>Back at the shop</h1>")
        elif url.startswith(sandbox_url):
            route.continue_()
        else:  # nothing leaves this machine
            route.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def _session(client: stripe.StripeClient) -> stripe.checkout.Session:
    params: dict[str, Any] = {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {
                    "currency": "usd",
                    "unit_amount": 14_900,
                    "product_data": {"name": "Job posting (30 days)"},
                },
                "quantity": 1,
            }
        ],
        "success_url": SUCCESS_URL,
        "cancel_url": CANCEL_URL,
        "payment_intent_data": {"metadata": {"job_id": "job_browser"}},
    }
    session: stripe.checkout.Session = client.v1.checkout.sessions.create(params=params)  # type: ignore[arg-type]
    return session


def _fill_card(page: Page, number: str) -> None:
    page.fill("#card_number", number)
    page.fill("#exp", "12 / 34")
    page.fill("#cvc", "123")
    page.fill("#name", "Ada Lovelace")


def test_paying_with_4242_completes_the_session_and_captures_the_payment(
    page: Page, sync_client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    session = _session(sync_client)
    page.goto(session.url)
    assert "149.00 USD" in page.content()
    _fill_card(page, "4242 4242 4242 4242")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(re.escape(SHOP + "/paid")))
    assert page.url == f"{SHOP}/paid?session={session.id}"

    paid = sync_client.v1.checkout.sessions.retrieve(session.id)
    assert (paid.status, paid.payment_status) == ("complete", "paid")
    intent = sync_client.v1.payment_intents.retrieve(paid.payment_intent)
    assert (intent.status, intent.amount, intent.currency) == ("succeeded", 14_900, "usd")
    assert intent.metadata["job_id"] == "job_browser"
    completed = receiver.wait_about(session.id, "checkout.session.completed")
    assert completed[0].event["data"]["object"]["payment_status"] == "paid"


def test_a_declined_card_leaves_the_session_open_and_a_retry_pays(
    page: Page, sync_client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    session = _session(sync_client)
    page.goto(session.url)
    _fill_card(page, "4000 0000 0000 0002")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert "Your card was declined." in page.content()
    assert page.url.startswith(session.url)  # still on the hosted page

    declined = sync_client.v1.checkout.sessions.retrieve(session.id)
    assert (declined.status, declined.payment_status) == ("open", "unpaid")
    intent = sync_client.v1.payment_intents.retrieve(declined.payment_intent)
    assert intent.status == "requires_payment_method"
    assert intent.last_payment_error.decline_code == "generic_decline"
    receiver.wait_about(intent.id, "payment_intent.payment_failed")

    _fill_card(page, "4242 4242 4242 4242")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(re.escape(SHOP + "/paid")))
    paid = sync_client.v1.checkout.sessions.retrieve(session.id)
    assert (paid.status, paid.payment_status, paid.payment_intent) == (
        "complete",
        "paid",
        intent.id,
    )
    assert sync_client.v1.payment_intents.retrieve(intent.id).status == "succeeded"


def test_cancel_returns_to_the_shop_and_charges_nothing(
    page: Page, sync_client: stripe.StripeClient
) -> None:
    session = _session(sync_client)
    page.goto(session.url)
    page.click("text=Cancel and return")
    page.wait_for_url(CANCEL_URL)
    assert "Back at the shop" in page.content()

    after = sync_client.v1.checkout.sessions.retrieve(session.id)
    assert (after.status, after.payment_status, after.payment_intent) == ("open", "unpaid", None)
    events = sync_client.v1.events.list(params={"type": "checkout.session.*", "limit": 100})
    assert all(event.data.object.id != session.id for event in events.data)
