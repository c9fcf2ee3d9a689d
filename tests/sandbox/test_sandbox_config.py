"""Start-up configuration (CLI flags over SANDBOX_* variables), automatic settlement, payouts
settled by hand, reset, and Stripe's form encoding."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stripe

from hirepay_dev.sandbox_client import SandboxAdmin, start_sandbox, stripe_client
from stripe_sandbox.config import load_config
from stripe_sandbox.params import parse_form
from tests.support.webhook_receiver import WebhookReceiver


@pytest.fixture(scope="module")
def other(receiver: WebhookReceiver) -> Iterator[tuple[str, SandboxAdmin]]:
    """A second sandbox: bank debits settle by themselves, payouts only by hand, and the
    webhook secret is generated (not configured)."""
    second_url = receiver.url.replace("/webhooks", "/second")
    process, url = start_sandbox(
        name="sandbox-tests-config",
        env={
            "SANDBOX_WEBHOOK_URL": f"{receiver.url}, {second_url}",
            "SANDBOX_SETTLE_AFTER": "0.2",
            "SANDBOX_PAYOUT_SETTLE_AFTER": "never",
            "SANDBOX_WEBHOOK_SECRET": "",
        },
    )
    admin = SandboxAdmin(url)
    yield url, admin
    admin.close()
    process.stop()


def test_generated_secret_signs_both_configured_urls(
    other: tuple[str, SandboxAdmin], receiver: WebhookReceiver
) -> None:
    url, admin = other
    endpoints = admin.webhook_endpoints()
    assert sorted(e["url"] for e in endpoints) == sorted(
        [receiver.url, receiver.url.replace("/webhooks", "/second")]
    )
    secret = endpoints[0]["secret"]
    assert secret.startswith("whsec_") and {e["secret"] for e in endpoints} == {secret}
    customer = stripe_client(url, allow_sync=True).v1.customers.create(params={"name": "x"})
    deliveries = receiver.wait_about(customer.id, "customer.created", count=2)
    assert {d.path for d in deliveries} == {"/webhooks", "/second"}
    for delivery in deliveries:
        stripe.Webhook.construct_event(delivery.body, delivery.headers["Stripe-Signature"], secret)


async def test_bank_debits_settle_after_the_configured_delay(
    other: tuple[str, SandboxAdmin], receiver: WebhookReceiver
) -> None:
    url, _ = other
    sdk = stripe_client(url)
    pi = await sdk.v1.payment_intents.create_async(
        params={
            "amount": 25_000,
            "currency": "usd",
            "payment_method": "pm_usBankAccount",
            "confirm": True,
        }
    )
    assert pi.status == "processing"
    succeeded = await receiver.wait_about_async(pi.id, "payment_intent.succeeded")
    assert succeeded[0].event["data"]["object"]["amount_received"] == 25_000
    assert (await sdk.v1.payment_intents.retrieve_async(pi.id)).status == "succeeded"


def test_payouts_wait_for_the_admin(
    other: tuple[str, SandboxAdmin], receiver: WebhookReceiver
) -> None:
    url, admin = other
    sdk = stripe_client(url, allow_sync=True)
    payout = sdk.v1.payouts.create(params={"amount": 4_000, "currency": "usd"})
    # A bank debit made after the payout settles by itself (SANDBOX_SETTLE_AFTER): the sandbox's
    # delayed changes have run past that point, and the payout is still waiting for the admin.
    debit = sdk.v1.payment_intents.create(
        params={
            "amount": 1_000,
            "currency": "usd",
            "payment_method": "pm_usBankAccount",
            "confirm": True,
        }
    )
    receiver.wait_about(debit.id, "payment_intent.succeeded")
    assert sdk.v1.payouts.retrieve(payout.id).status == "pending"
    failed = admin.settle_payout(payout.id, "failed", failure_code="account_closed")
    assert (failed["status"], failed["failure_code"]) == ("failed", "account_closed")
    assert failed["failure_message"] == "The bank account has been closed."
    receiver.wait_about(payout.id, "payout.failed", count=2)  # both configured URLs

    paid = sdk.v1.payouts.create(params={"amount": 4_000, "currency": "usd"})
    assert admin.settle_payout(paid.id)["status"] == "paid"
    canceled = sdk.v1.payouts.create(params={"amount": 4_000, "currency": "usd"})
    assert sdk.v1.payouts.cancel(canceled.id).status == "canceled"


def test_reset_forgets_everything(other: tuple[str, SandboxAdmin]) -> None:
    url, admin = other
    sdk = stripe_client(url, allow_sync=True)
    customer = sdk.v1.customers.create(params={"email": "gone@hirepay.test"})
    secret = admin.webhook_endpoints()[0]["secret"]
    admin.add_fault("latency", ms=1, path_prefix="/v1/nothing")
    admin.reset()
    with pytest.raises(stripe.InvalidRequestError):
        sdk.v1.customers.retrieve(customer.id)
    assert sdk.v1.events.list().data == []
    assert admin.faults() == []
    assert admin.webhook_endpoints()[0]["secret"] == secret  # configured endpoints stay


def test_cli_flags_override_the_environment() -> None:
    env = {
        "SANDBOX_HOST": "0.0.0.0",
        "SANDBOX_PORT": "9999",
        "SANDBOX_WEBHOOK_URL": "http://a/hook,http://b/hook",
        "SANDBOX_WEBHOOK_SECRET": "whsec_fromenv",
        "SANDBOX_WEBHOOK_RETRY_BASE": "0.25",
    }
    from_env = load_config([], env)
    assert (from_env.host, from_env.port) == ("0.0.0.0", 9999)
    assert from_env.webhook_urls == ("http://a/hook", "http://b/hook")
    assert (from_env.webhook_secret, from_env.webhook_retry_base) == ("whsec_fromenv", 0.25)
    assert from_env.settle_after is None and from_env.payout_settle_after == 0.5

    flags = load_config(["--port", "1234", "--webhook-url", "http://c/hook"], env)
    assert (flags.port, flags.webhook_urls) == (1234, ("http://c/hook",))
    assert load_config([], {}).port == 12111
    # The configured URLs' events: every event unless narrowed, as an endpoint's enabled events.
    assert load_config([], {}).webhook_events == ("*",)
    narrowed = {**env, "SANDBOX_WEBHOOK_EVENTS": "payment_intent.*, payout.*"}
    assert load_config([], narrowed).webhook_events == ("payment_intent.*", "payout.*")
    with pytest.raises(SystemExit):
        load_config(["--webhook-secret", "not-a-whsec"], {})


def test_form_decoding_matches_the_sdk_encoding() -> None:
    decoded = parse_form(
        "amount=100&metadata[order]=7&metadata[0]=zero&expand[0]=latest_charge&expand[1]=customer"
        "&line_items[0][price_data][currency]=usd&line_items[0][quantity]=2"
        "&line_items[1][quantity]=1&enabled_events[]=a&enabled_events[]=b&note="
    )
    assert decoded == {
        "amount": "100",
        "metadata": {"order": "7", "0": "zero"},
        "expand": ["latest_charge", "customer"],
        "line_items": [{"price_data": {"currency": "usd"}, "quantity": "2"}, {"quantity": "1"}],
        "enabled_events": ["a", "b"],
        "note": "",
    }
