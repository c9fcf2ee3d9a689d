"""Checkout Sessions and the hosted page: pay with each test card, decline then retry, 3-D
Secure, cancel, expire (API and expires_at), manual capture, redirects and events."""

from __future__ import annotations

import time
from typing import Any

import pytest
import stripe

from hirepay_dev.sandbox_client import SandboxAdmin
from tests.support.webhook_receiver import WebhookReceiver

SUCCESS_URL = "https://hirepay.test/paid?session={CHECKOUT_SESSION_ID}"
CANCEL_URL = "https://hirepay.test/canceled"


def _session(client: stripe.StripeClient, **extra: Any) -> stripe.checkout.Session:
    params: dict[str, Any] = {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {
                    "currency": "usd",
                    "unit_amount": 2_500,
                    "product_data": {"name": "Job posting (30 days)"},
                },
                "quantity": 2,
            }
        ],
        "success_url": SUCCESS_URL,
        "cancel_url": CANCEL_URL,
        "client_reference_id": "draft_42",
        "metadata": {"type": "job_posting"},
        "payment_intent_data": {"metadata": {"job_id": "job_42"}},
        **extra,
    }
    session: stripe.checkout.Session = client.v1.checkout.sessions.create(params=params)  # type: ignore[arg-type]
    return session


def test_session_is_created_open_with_a_hosted_page(
    sync_client: stripe.StripeClient, admin: SandboxAdmin, sandbox_url: str
) -> None:
    session = _session(sync_client, customer_email="buyer@hirepay.test")
    assert session.id.startswith("cs_test_")
    assert session.object == "checkout.session"
    assert (session.status, session.payment_status, session.mode) == ("open", "unpaid", "payment")
    assert (session.amount_total, session.currency) == (5_000, "usd")
    assert session.url == f"{sandbox_url}/checkout/{session.id}"
    assert session.payment_intent is None
    assert session.client_reference_id == "draft_42"
    assert session.customer_email == "buyer@hirepay.test"
    assert 23 * 3600 < session.expires_at - session.created <= 24 * 3600

    page = admin.http.get(session.url)
    assert page.status_code == 200
    assert "50.00 USD" in page.text
    assert "Job posting (30 days)" in page.text
    assert 'name="card_number"' in page.text and f"/checkout/{session.id}/cancel" in page.text

    items = sync_client.v1.checkout.sessions.line_items.list(session.id)
    assert [(i.description, i.quantity, i.amount_total) for i in items.data] == [
        ("Job posting (30 days)", 2, 5_000)
    ]


def test_paying_completes_the_session_and_redirects(
    sync_client: stripe.StripeClient, admin: SandboxAdmin, receiver: WebhookReceiver
) -> None:
    session = _session(sync_client)
    answer = admin.pay_checkout(session.url, "4242 4242 4242 4242")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"https://hirepay.test/paid?session={session.id}"

    paid = sync_client.v1.checkout.sessions.retrieve(session.id)
    assert (paid.status, paid.payment_status, paid.url) == ("complete", "paid", None)
    pi = sync_client.v1.payment_intents.retrieve(paid.payment_intent)
    assert (pi.status, pi.amount, pi.amount_received) == ("succeeded", 5_000, 5_000)
    assert pi.metadata.to_dict() == {"job_id": "job_42"}

    completed = receiver.wait_about(session.id, "checkout.session.completed")
    body = completed[0].event["data"]["object"]
    assert (body["payment_status"], body["payment_intent"]) == ("paid", pi.id)
    assert body["metadata"] == {"type": "job_posting"}
    receiver.wait_about(pi.id, "payment_intent.succeeded")

    # Pressing Pay again (double click, refresh) charges nothing more.
    again = admin.pay_checkout(session.url, "4242 4242 4242 4242")
    assert again.status_code == 303
    charges = sync_client.v1.charges.list(params={"payment_intent": pi.id})
    assert len(charges.data) == 1
    assert sync_client.v1.checkout.sessions.list(params={"payment_intent": pi.id}).data[0].id == (
        session.id
    )


@pytest.mark.parametrize(
    "number,message,decline_code",
    [
        ("4000 0000 0000 0002", "Your card was declined.", "generic_decline"),
        ("4000 0000 0000 9995", "Your card has insufficient funds.", "insufficient_funds"),
        ("4000 0000 0000 0119", "An error occurred while processing your card.", "processing_error"),
        ("4000 0000 0000 0069", "Your card has expired.", "expired_card"),
        ("4000 0000 0000 0127", "Your card&#x27;s security code is incorrect.", "incorrect_cvc"),
    ],
)  # fmt: skip
def test_declined_cards_show_the_decline_and_can_retry(
    sync_client: stripe.StripeClient,
    admin: SandboxAdmin,
    receiver: WebhookReceiver,
    number: str,
    message: str,
    decline_code: str,
) -> None:
    session = _session(sync_client)
    answer = admin.pay_checkout(session.url, number)
    assert answer.status_code == 402
    assert message in answer.text
    declined = sync_client.v1.checkout.sessions.retrieve(session.id)
    assert (declined.status, declined.payment_status) == ("open", "unpaid")
    pi = sync_client.v1.payment_intents.retrieve(declined.payment_intent)
    assert pi.status == "requires_payment_method"
    assert pi.last_payment_error.decline_code == decline_code
    failed = receiver.wait_about(pi.id, "payment_intent.payment_failed")
    assert failed[0].event["data"]["object"]["metadata"] == {"job_id": "job_42"}

    retry = admin.pay_checkout(session.url, "4242424242424242")
    assert retry.status_code == 303
    paid = sync_client.v1.checkout.sessions.retrieve(session.id)
    assert (paid.status, paid.payment_intent) == ("complete", pi.id)


@pytest.mark.parametrize(
    "form,message",
    [
        ({"card_number": "4242 4242 4242 4241"}, "Your card number is incorrect."),
        ({"card_number": "4242424242424242", "exp": "01/20"}, "expiration year is in the past"),
        ({"card_number": "4242424242424242", "cvc": "1"}, "security code is incomplete"),
        ({"card_number": ""}, "Your card number is incomplete."),
    ],
)
def test_invalid_card_details_are_shown(
    sync_client: stripe.StripeClient, admin: SandboxAdmin, form: dict[str, str], message: str
) -> None:
    session = _session(sync_client)
    answer = admin.http.post(f"{session.url}/pay", data=form)
    assert answer.status_code in (400, 402)
    assert message in answer.text.replace("&#x27;", "'")
    assert sync_client.v1.checkout.sessions.retrieve(session.id).status == "open"


def test_three_d_secure_on_the_hosted_page(
    sync_client: stripe.StripeClient, admin: SandboxAdmin, receiver: WebhookReceiver
) -> None:
    session = _session(sync_client)
    answer = admin.pay_checkout(session.url, "4000 0000 0000 3220")
    assert answer.status_code == 303
    challenge = answer.headers["location"]
    assert "/3ds/pi_" in challenge
    back = admin.answer_3ds(challenge, approve=True)
    assert back.status_code == 303
    assert back.headers["location"].startswith(f"{session.url}/return?payment_intent=")
    final = admin.http.get(back.headers["location"])
    assert final.status_code == 303
    assert final.headers["location"] == f"https://hirepay.test/paid?session={session.id}"
    assert sync_client.v1.checkout.sessions.retrieve(session.id).status == "complete"
    receiver.wait_about(session.id, "checkout.session.completed")


def test_cancel_redirects_and_emits_nothing(
    sync_client: stripe.StripeClient, admin: SandboxAdmin
) -> None:
    session = _session(sync_client)
    answer = admin.cancel_checkout(session.url)
    assert (answer.status_code, answer.headers["location"]) == (303, CANCEL_URL)
    assert sync_client.v1.checkout.sessions.retrieve(session.id).status == "open"
    events = sync_client.v1.events.list(params={"type": "checkout.session.*", "limit": 100})
    assert all(e.data.object.id != session.id for e in events.data)


def test_expire_through_the_api(
    sync_client: stripe.StripeClient, admin: SandboxAdmin, receiver: WebhookReceiver
) -> None:
    session = _session(sync_client)
    admin.pay_checkout(session.url, "4000 0000 0000 0002")  # leaves an intent to cancel
    expired = sync_client.v1.checkout.sessions.expire(session.id)
    assert (expired.status, expired.url) == ("expired", None)
    received = receiver.wait_about(session.id, "checkout.session.expired")
    assert received[0].event["data"]["object"]["status"] == "expired"
    pi = sync_client.v1.payment_intents.retrieve(expired.payment_intent)
    assert (pi.status, pi.cancellation_reason) == ("canceled", "abandoned")

    late = admin.pay_checkout(session.url, "4242 4242 4242 4242")
    assert late.status_code == 410 and "expired" in late.text
    with pytest.raises(stripe.InvalidRequestError):
        sync_client.v1.checkout.sessions.expire(session.id)


def test_session_expires_at_expires_at(
    sync_client: stripe.StripeClient, admin: SandboxAdmin, receiver: WebhookReceiver
) -> None:
    now = admin.advance_clock(0)  # the sandbox's clock
    session = _session(sync_client, expires_at=now + 1)
    received = receiver.wait_about(session.id, "checkout.session.expired", timeout=5)
    assert received[0].event["data"]["object"]["status"] == "expired"
    assert sync_client.v1.checkout.sessions.retrieve(session.id).status == "expired"


def test_advancing_the_clock_expires_sessions(
    sync_client: stripe.StripeClient, admin: SandboxAdmin
) -> None:
    session = _session(sync_client, expires_at=admin.advance_clock(0) + 3_600)
    admin.advance_clock(3_601)
    assert sync_client.v1.checkout.sessions.retrieve(session.id).status == "expired"


def test_manual_capture_checkout(
    sync_client: stripe.StripeClient, admin: SandboxAdmin, receiver: WebhookReceiver
) -> None:
    session = _session(
        sync_client, payment_intent_data={"capture_method": "manual", "metadata": {"offer": "o1"}}
    )
    assert admin.pay_checkout(session.url).status_code == 303
    completed = sync_client.v1.checkout.sessions.retrieve(session.id)
    assert (completed.status, completed.payment_status) == ("complete", "unpaid")
    pi = sync_client.v1.payment_intents.retrieve(completed.payment_intent)
    assert (pi.status, pi.amount_capturable) == ("requires_capture", 5_000)
    receiver.wait_about(session.id, "checkout.session.completed")
    captured = sync_client.v1.payment_intents.capture(pi.id)
    assert captured.amount_received == 5_000


def test_customer_sessions_and_validation(sync_client: stripe.StripeClient) -> None:
    customer = sync_client.v1.customers.create(params={"email": "co@hirepay.test"})
    session = _session(sync_client, customer=customer.id)
    assert session.customer == customer.id
    listed = sync_client.v1.checkout.sessions.list(params={"customer": customer.id})
    assert [s.id for s in listed.data] == [session.id]

    with pytest.raises(stripe.InvalidRequestError) as both:
        _session(sync_client, customer=customer.id, customer_email="x@hirepay.test")
    assert both.value.param == "customer_email"
    with pytest.raises(stripe.InvalidRequestError) as no_items:
        sync_client.v1.checkout.sessions.create(params={"mode": "payment", "success_url": "x"})
    assert (no_items.value.code, no_items.value.param) == ("parameter_missing", "line_items")
    with pytest.raises(stripe.InvalidRequestError) as missing:
        sync_client.v1.checkout.sessions.retrieve("cs_test_nope")
    assert missing.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError) as past:
        _session(sync_client, expires_at=int(time.time()) - 10)
    assert past.value.param == "expires_at"
