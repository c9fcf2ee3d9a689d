"""PaymentIntents through the official SDK: test payment methods, capture, cancel, 3-D Secure,
bank debits, errors and their exception classes."""

from __future__ import annotations

import uuid

import httpx
import pytest
import stripe

from hirepay_dev.sandbox_client import SandboxAdmin
from tests.support.webhook_receiver import WebhookReceiver

DECLINES = [
    # (test payment method, code, decline_code, message)
    ("pm_card_chargeDeclined", "card_declined", "generic_decline", "Your card was declined."),
    (
        "pm_card_chargeDeclinedInsufficientFunds",
        "card_declined",
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
    (
        "pm_card_chargeDeclinedProcessingError",
        "processing_error",
        "processing_error",
        "An error occurred while processing your card. Try again in a little bit.",
    ),
    ("pm_card_chargeDeclinedExpiredCard", "expired_card", "expired_card", "Your card has expired."),
    (
        "pm_card_chargeDeclinedIncorrectCvc",
        "incorrect_cvc",
        "incorrect_cvc",
        "Your card's security code is incorrect.",
    ),
]


@pytest.mark.parametrize("token,brand,last4", [("pm_card_visa", "visa", "4242"), ("pm_card_mastercard", "mastercard", "4444")])  # fmt: skip
async def test_successful_cards_capture_automatically(
    client: stripe.StripeClient, receiver: WebhookReceiver, token: str, brand: str, last4: str
) -> None:
    pi = await client.v1.payment_intents.create_async(
        params={
            "amount": 2500,
            "currency": "usd",
            "payment_method": token,
            "confirm": True,
            "metadata": {"job_id": "job_1", "kind": "posting"},
            "description": "Job posting fee",
        },
        options={"idempotency_key": f"create-{uuid.uuid4()}"},
    )
    assert pi.id.startswith("pi_")
    assert pi.object == "payment_intent"
    assert pi.status == "succeeded"
    assert pi.amount_received == 2500
    assert pi.amount_capturable == 0
    assert pi.livemode is False
    assert pi.metadata.to_dict() == {"job_id": "job_1", "kind": "posting"}
    assert pi.payment_method.startswith("pm_") and pi.payment_method != token
    assert pi.latest_charge.startswith("ch_")
    assert pi.client_secret.startswith(f"{pi.id}_secret_")

    charge = await client.v1.charges.retrieve_async(pi.latest_charge)
    assert (charge.status, charge.captured, charge.amount_captured) == ("succeeded", True, 2500)
    assert charge.payment_method_details.card.brand == brand
    assert charge.payment_method_details.card.last4 == last4

    events = await receiver.wait_about_async(pi.id, "payment_intent.succeeded")
    assert events[0].event["data"]["object"]["amount_received"] == 2500


@pytest.mark.parametrize("token,code,decline_code,message", DECLINES)
async def test_declining_cards_raise_card_errors(
    client: stripe.StripeClient,
    receiver: WebhookReceiver,
    token: str,
    code: str,
    decline_code: str,
    message: str,
) -> None:
    with pytest.raises(stripe.CardError) as raised:
        await client.v1.payment_intents.create_async(
            params={"amount": 1500, "currency": "usd", "payment_method": token, "confirm": True}
        )
    error = raised.value
    assert error.http_status == 402
    assert error.code == code
    assert error.error.decline_code == decline_code
    assert error.user_message == message
    assert error.error.type == "card_error"
    intent = error.error.payment_intent
    assert intent.status == "requires_payment_method"
    assert intent.last_payment_error.code == code
    assert intent.last_payment_error.decline_code == decline_code
    assert intent.amount_received == 0

    stored = await client.v1.payment_intents.retrieve_async(intent.id)
    assert stored.status == "requires_payment_method"
    assert stored.payment_method is None
    charge = await client.v1.charges.retrieve_async(stored.latest_charge)
    assert (charge.status, charge.failure_code, charge.paid) == ("failed", code, False)
    failed = await receiver.wait_about_async(intent.id, "payment_intent.payment_failed")
    assert failed[0].event["data"]["object"]["last_payment_error"]["decline_code"] == decline_code


def test_sync_methods_work_too(sync_client: stripe.StripeClient) -> None:
    pi = sync_client.v1.payment_intents.create(
        params={"amount": 999, "currency": "eur", "payment_method": "pm_card_visa", "confirm": True}
    )
    assert (pi.status, pi.currency, pi.amount_received) == ("succeeded", "eur", 999)
    with pytest.raises(stripe.CardError) as raised:
        sync_client.v1.payment_intents.create(
            params={
                "amount": 999,
                "currency": "eur",
                "payment_method": "pm_card_chargeDeclinedInsufficientFunds",
                "confirm": True,
            }
        )
    assert raised.value.error.decline_code == "insufficient_funds"


async def test_declined_intent_can_be_retried_with_another_card(
    client: stripe.StripeClient,
) -> None:
    with pytest.raises(stripe.CardError) as raised:
        await client.v1.payment_intents.create_async(
            params={
                "amount": 3000,
                "currency": "usd",
                "payment_method": "pm_card_chargeDeclined",
                "confirm": True,
            }
        )
    intent_id = raised.value.error.payment_intent.id
    pi = await client.v1.payment_intents.confirm_async(
        intent_id, params={"payment_method": "pm_card_visa"}
    )
    assert pi.status == "succeeded"
    assert pi.last_payment_error is None
    assert pi.amount_received == 3000


async def test_two_step_confirmation(client: stripe.StripeClient) -> None:
    pi = await client.v1.payment_intents.create_async(params={"amount": 700, "currency": "usd"})
    assert pi.status == "requires_payment_method"
    pi = await client.v1.payment_intents.update_async(
        pi.id, params={"payment_method": "pm_card_visa", "metadata": {"step": "2"}}
    )
    assert pi.status == "requires_confirmation"
    assert pi.metadata["step"] == "2"
    pi = await client.v1.payment_intents.confirm_async(pi.id)
    assert pi.status == "succeeded"


async def test_manual_capture_partial_releases_the_rest(
    client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    pi = await client.v1.payment_intents.create_async(
        params={
            "amount": 10_000,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "capture_method": "manual",
        }
    )
    assert (pi.status, pi.amount_capturable, pi.amount_received) == ("requires_capture", 10_000, 0)
    await receiver.wait_about_async(pi.id, "payment_intent.amount_capturable_updated")

    with pytest.raises(stripe.InvalidRequestError) as too_much:
        await client.v1.payment_intents.capture_async(pi.id, params={"amount_to_capture": 10_001})
    assert too_much.value.code == "amount_too_large"

    captured = await client.v1.payment_intents.capture_async(
        pi.id, params={"amount_to_capture": 7_000}
    )
    assert (captured.status, captured.amount_received, captured.amount_capturable) == (
        "succeeded",
        7_000,
        0,
    )
    charge = await client.v1.charges.retrieve_async(captured.latest_charge)
    assert (charge.captured, charge.amount_captured) == (True, 7_000)
    succeeded = await receiver.wait_about_async(pi.id, "payment_intent.succeeded")
    assert succeeded[0].event["data"]["object"]["amount_received"] == 7_000

    with pytest.raises(stripe.InvalidRequestError) as again:
        await client.v1.payment_intents.capture_async(pi.id)
    assert again.value.code == "payment_intent_unexpected_state"
    assert "status of succeeded" in again.value.user_message


async def test_full_capture_without_amount(client: stripe.StripeClient) -> None:
    pi = await client.v1.payment_intents.create_async(
        params={
            "amount": 4_200,
            "currency": "gbp",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "capture_method": "manual",
        }
    )
    captured = await client.v1.payment_intents.capture_async(pi.id)
    assert (captured.status, captured.amount_received) == ("succeeded", 4_200)


async def test_cancel_voids_an_authorization(
    client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    pi = await client.v1.payment_intents.create_async(
        params={
            "amount": 5_000,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "capture_method": "manual",
        }
    )
    canceled = await client.v1.payment_intents.cancel_async(
        pi.id, params={"cancellation_reason": "abandoned"}
    )
    assert canceled.status == "canceled"
    assert canceled.cancellation_reason == "abandoned"
    assert canceled.amount_capturable == 0
    assert canceled.canceled_at is not None
    await receiver.wait_about_async(pi.id, "payment_intent.canceled")

    with pytest.raises(stripe.InvalidRequestError) as capture_after:
        await client.v1.payment_intents.capture_async(pi.id)
    assert capture_after.value.code == "payment_intent_unexpected_state"
    with pytest.raises(stripe.InvalidRequestError) as cancel_again:
        await client.v1.payment_intents.cancel_async(pi.id)
    assert cancel_again.value.code == "payment_intent_unexpected_state"


async def test_succeeded_intent_cannot_be_canceled(client: stripe.StripeClient) -> None:
    pi = await client.v1.payment_intents.create_async(
        params={"amount": 600, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.payment_intents.cancel_async(pi.id)
    assert raised.value.code == "payment_intent_unexpected_state"
    assert raised.value.error.payment_intent.status == "succeeded"


async def test_three_d_secure_approved_on_the_page(
    client: stripe.StripeClient, admin: SandboxAdmin, receiver: WebhookReceiver
) -> None:
    pi = await client.v1.payment_intents.create_async(
        params={
            "amount": 8_000,
            "currency": "usd",
            "payment_method": "pm_card_threeDSecure2Required",
            "confirm": True,
            "return_url": "https://hirepay.test/return?job=7",
        }
    )
    assert pi.status == "requires_action"
    assert pi.next_action.type == "redirect_to_url"
    redirect = pi.next_action.redirect_to_url
    assert redirect.return_url == "https://hirepay.test/return?job=7"
    assert redirect.url.endswith(f"/3ds/{pi.id}")
    await receiver.wait_about_async(pi.id, "payment_intent.requires_action")

    async with httpx.AsyncClient() as http:
        page = await http.get(redirect.url)
    assert page.status_code == 200 and "Complete authentication" in page.text
    answered = admin.answer_3ds(redirect.url, approve=True)
    assert answered.status_code == 303
    location = answered.headers["location"]
    assert location.startswith("https://hirepay.test/return?job=7&payment_intent=" + pi.id)
    assert "redirect_status=succeeded" in location

    done = await client.v1.payment_intents.retrieve_async(pi.id)
    assert (done.status, done.amount_received, done.next_action) == ("succeeded", 8_000, None)
    await receiver.wait_about_async(pi.id, "payment_intent.succeeded")


async def test_three_d_secure_failed_on_the_page(
    client: stripe.StripeClient, admin: SandboxAdmin, receiver: WebhookReceiver
) -> None:
    pi = await client.v1.payment_intents.create_async(
        params={
            "amount": 8_000,
            "currency": "usd",
            "payment_method": "pm_card_threeDSecure2Required",
            "confirm": True,
            "capture_method": "manual",
            "return_url": "https://hirepay.test/return",
        }
    )
    answered = admin.answer_3ds(pi.next_action.redirect_to_url.url, approve=False)
    assert "redirect_status=failed" in answered.headers["location"]
    failed = await client.v1.payment_intents.retrieve_async(pi.id)
    assert failed.status == "requires_payment_method"
    assert failed.last_payment_error.code == "payment_intent_authentication_failure"
    await receiver.wait_about_async(pi.id, "payment_intent.payment_failed")


async def test_three_d_secure_through_admin_with_manual_capture(
    client: stripe.StripeClient, admin: SandboxAdmin
) -> None:
    pi = await client.v1.payment_intents.create_async(
        params={
            "amount": 1_200,
            "currency": "usd",
            "payment_method": "pm_card_threeDSecure2Required",
            "confirm": True,
            "capture_method": "manual",
        }
    )
    result = admin.authenticate_payment_intent(pi.id, "succeeded")
    assert (result["status"], result["amount_capturable"]) == ("requires_capture", 1_200)


async def test_three_d_secure_off_session_requires_authentication(
    client: stripe.StripeClient,
) -> None:
    with pytest.raises(stripe.CardError) as raised:
        await client.v1.payment_intents.create_async(
            params={
                "amount": 1_200,
                "currency": "usd",
                "payment_method": "pm_card_threeDSecure2Required",
                "confirm": True,
                "off_session": True,
            }
        )
    assert raised.value.code == "authentication_required"


@pytest.mark.parametrize("token", ["pm_usBankAccount", "pm_bank_transfer"])
async def test_bank_debit_settles_later(
    client: stripe.StripeClient, admin: SandboxAdmin, receiver: WebhookReceiver, token: str
) -> None:
    pi = await client.v1.payment_intents.create_async(
        params={"amount": 50_000, "currency": "usd", "payment_method": token, "confirm": True}
    )
    assert (pi.status, pi.amount_received) == ("processing", 0)
    assert pi.processing.type == "us_bank_account"
    assert "us_bank_account" in pi.payment_method_types
    await receiver.wait_about_async(pi.id, "payment_intent.processing")

    settled = admin.settle_payment_intent(pi.id, "succeeded")
    assert (settled["status"], settled["amount_received"]) == ("succeeded", 50_000)
    await receiver.wait_about_async(pi.id, "payment_intent.succeeded")

    with pytest.raises(httpx.HTTPStatusError) as twice:
        admin.settle_payment_intent(pi.id, "succeeded")
    assert twice.value.response.status_code == 409


async def test_bank_debit_can_bounce(
    client: stripe.StripeClient, admin: SandboxAdmin, receiver: WebhookReceiver
) -> None:
    pi = await client.v1.payment_intents.create_async(
        params={
            "amount": 50_000,
            "currency": "usd",
            "payment_method": "pm_usBankAccount",
            "confirm": True,
        }
    )
    bounced = admin.settle_payment_intent(pi.id, "failed", failure_code="account_closed")
    assert bounced["status"] == "requires_payment_method"
    assert bounced["last_payment_error"]["code"] == "account_closed"
    failed = await receiver.wait_about_async(pi.id, "payment_intent.payment_failed")
    assert failed[0].event["data"]["object"]["last_payment_error"]["code"] == "account_closed"


async def test_bank_debit_refuses_manual_capture(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.payment_intents.create_async(
            params={
                "amount": 50_000,
                "currency": "usd",
                "payment_method": "pm_usBankAccount",
                "confirm": True,
                "capture_method": "manual",
            }
        )
    assert raised.value.param == "capture_method"


async def test_payment_method_types_are_enforced(client: stripe.StripeClient) -> None:
    tag = uuid.uuid4().hex
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.payment_intents.create_async(
            params={
                "amount": 50_000,
                "currency": "usd",
                "payment_method": "pm_usBankAccount",
                "payment_method_types": ["card"],
                "confirm": True,
                "metadata": {"tag": tag},
            }
        )
    assert raised.value.code == "payment_intent_incompatible_payment_method"
    found = await client.v1.payment_intents.search_async(
        params={"query": f"metadata['tag']:'{tag}'"}
    )
    assert found.data == []  # refused before anything was created


async def test_unknown_payment_method_is_resource_missing(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.payment_intents.create_async(
            params={
                "amount": 1000,
                "currency": "usd",
                "payment_method": "pm_card_doesNotExist",
                "confirm": True,
            }
        )
    error = raised.value
    assert (error.http_status, error.code, error.param) == (
        400,
        "resource_missing",
        "payment_method",
    )
    assert "pm_card_doesNotExist" in error.user_message


async def test_unknown_intent_is_404(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.payment_intents.retrieve_async("pi_doesnotexist")
    assert (raised.value.http_status, raised.value.code) == (404, "resource_missing")


@pytest.mark.parametrize(
    "params,code,param",
    [
        ({"currency": "usd"}, "parameter_missing", "amount"),
        ({"amount": 1000}, "parameter_missing", "currency"),
        ({"amount": "ten", "currency": "usd"}, "parameter_invalid_integer", "amount"),
        ({"amount": 10, "currency": "usd"}, "amount_too_small", "amount"),
        ({"amount": 1000, "currency": "usd", "capture_method": "later"}, "parameter_invalid", "capture_method"),
    ],
)  # fmt: skip
async def test_invalid_parameters(
    client: stripe.StripeClient, params: dict[str, object], code: str, param: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.payment_intents.create_async(params=params)  # type: ignore[arg-type]
    assert (raised.value.http_status, raised.value.code, raised.value.param) == (400, code, param)


async def test_bad_api_keys_are_rejected(sandbox_url: str) -> None:
    for key in ("sk_live_123456789012345", "pk_test_abc", "nonsense"):
        bad = stripe.StripeClient(
            key, base_addresses={"api": sandbox_url}, http_client=stripe.HTTPXClient()
        )
        with pytest.raises(stripe.AuthenticationError) as raised:
            await bad.v1.customers.list_async()
        assert raised.value.http_status == 401
    async with httpx.AsyncClient(base_url=sandbox_url) as http:
        missing = await http.get("/v1/customers")
        basic = await http.get("/v1/customers", auth=("sk_test_basic", ""))
    assert missing.status_code == 401
    assert "did not provide an API key" in missing.json()["error"]["message"]
    assert basic.status_code == 200 and basic.json()["object"] == "list"


async def test_list_by_customer_and_expand(client: stripe.StripeClient) -> None:
    customer = await client.v1.customers.create_async(params={"email": "pi-list@hirepay.test"})
    created = []
    for amount in (1000, 2000, 3000):
        pi = await client.v1.payment_intents.create_async(
            params={
                "amount": amount,
                "currency": "usd",
                "customer": customer.id,
                "payment_method": "pm_card_visa",
                "confirm": True,
            }
        )
        created.append(pi.id)
    page = await client.v1.payment_intents.list_async(params={"customer": customer.id, "limit": 2})
    assert [pi.id for pi in page.data] == created[::-1][:2]  # newest first
    assert page.has_more is True
    everything = [pi.id async for pi in page.auto_paging_iter()]
    assert everything == created[::-1]

    expanded = await client.v1.payment_intents.retrieve_async(
        created[0], params={"expand": ["latest_charge", "customer"]}
    )
    assert expanded.latest_charge.object == "charge"
    assert expanded.latest_charge.amount == 1000
    assert expanded.customer.email == "pi-list@hirepay.test"


async def test_update_metadata_merges_and_unsets(client: stripe.StripeClient) -> None:
    pi = await client.v1.payment_intents.create_async(
        params={"amount": 1000, "currency": "usd", "metadata": {"a": "1", "b": "2"}}
    )
    pi = await client.v1.payment_intents.update_async(
        pi.id, params={"metadata": {"b": "", "c": "3"}}
    )
    assert pi.metadata.to_dict() == {"a": "1", "c": "3"}


async def test_search_by_metadata_and_status(client: stripe.StripeClient) -> None:
    order = uuid.uuid4().hex
    paid = await client.v1.payment_intents.create_async(
        params={
            "amount": 1_100,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "metadata": {"order_id": order},
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
        }
    )
    assert paid.automatic_payment_methods.allow_redirects == "never"
    await client.v1.payment_intents.create_async(
        params={"amount": 1_200, "currency": "usd", "metadata": {"order_id": order}}
    )
    both = await client.v1.payment_intents.search_async(
        params={"query": f"metadata['order_id']:'{order}'"}
    )
    assert sorted(pi.amount for pi in both.data) == [1_100, 1_200]
    assert both.object == "search_result"
    only_paid = await client.v1.payment_intents.search_async(
        params={"query": f"metadata['order_id']:'{order}' AND status:'succeeded'"}
    )
    assert [pi.id for pi in only_paid.data] == [paid.id]
    bigger = await client.v1.payment_intents.search_async(
        params={"query": f"metadata['order_id']:'{order}' AND amount>1150"}
    )
    assert [pi.amount for pi in bigger.data] == [1_200]
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.payment_intents.search_async(params={"query": "status = 'x'"})
