"""Refunds: partial, repeated, never beyond what was captured, even when sent concurrently."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import stripe

from hirepay_dev.sandbox_client import SandboxAdmin
from tests.support.webhook_receiver import WebhookReceiver


async def _paid(client: stripe.StripeClient, amount: int, **extra: object) -> stripe.PaymentIntent:
    params = {
        "amount": amount,
        "currency": "usd",
        "payment_method": "pm_card_visa",
        "confirm": True,
        **extra,
    }
    intent: stripe.PaymentIntent = await client.v1.payment_intents.create_async(params=params)  # type: ignore[arg-type]
    return intent


async def test_partial_and_repeated_refunds_up_to_the_captured_amount(
    client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    pi = await _paid(client, 10_000)
    first = await client.v1.refunds.create_async(
        params={"payment_intent": pi.id, "amount": 3_000, "reason": "requested_by_customer"}
    )
    assert first.id.startswith("re_")
    assert (first.object, first.status, first.amount, first.currency) == (
        "refund",
        "succeeded",
        3_000,
        "usd",
    )
    assert (first.payment_intent, first.charge, first.reason) == (
        pi.id,
        pi.latest_charge,
        "requested_by_customer",
    )
    second = await client.v1.refunds.create_async(
        params={"payment_intent": pi.id, "amount": 2_000, "metadata": {"ticket": "T-9"}}
    )
    assert second.metadata["ticket"] == "T-9"
    rest = await client.v1.refunds.create_async(params={"payment_intent": pi.id})
    assert rest.amount == 5_000

    charge = await client.v1.charges.retrieve_async(pi.latest_charge)
    assert (charge.amount_refunded, charge.refunded) == (10_000, True)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.refunds.create_async(params={"payment_intent": pi.id, "amount": 1})
    assert raised.value.code == "charge_already_refunded"

    listed = await client.v1.refunds.list_async(params={"payment_intent": pi.id})
    assert sorted(r.amount for r in listed.data) == [2_000, 3_000, 5_000]
    assert (await client.v1.refunds.retrieve_async(first.id)).amount == 3_000
    created = await receiver.wait_about_async(rest.id, "refund.created")
    assert created[0].event["data"]["object"]["amount"] == 5_000
    refunded = await receiver.wait_about_async(pi.latest_charge, "charge.refunded", count=3)
    assert refunded[-1].event["data"]["object"]["amount_refunded"] in (5_000, 10_000)


async def test_refund_beyond_the_rest_is_refused_and_changes_nothing(
    client: stripe.StripeClient,
) -> None:
    pi = await _paid(client, 5_000)
    await client.v1.refunds.create_async(params={"payment_intent": pi.id, "amount": 4_000})
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.refunds.create_async(params={"payment_intent": pi.id, "amount": 1_001})
    error = raised.value
    assert (error.http_status, error.code, error.param) == (400, "amount_too_large", "amount")
    assert "1001" in error.user_message and "1000" in error.user_message
    charge = await client.v1.charges.retrieve_async(pi.latest_charge)
    assert (charge.amount_refunded, charge.refunded) == (4_000, False)


async def test_refund_after_partial_capture_is_limited_to_the_captured_amount(
    client: stripe.StripeClient,
) -> None:
    pi = await _paid(client, 10_000, capture_method="manual")
    await client.v1.payment_intents.capture_async(pi.id, params={"amount_to_capture": 6_000})
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.refunds.create_async(params={"payment_intent": pi.id, "amount": 6_001})
    assert raised.value.code == "amount_too_large"
    refund = await client.v1.refunds.create_async(params={"payment_intent": pi.id})
    assert refund.amount == 6_000


async def test_uncaptured_or_failed_payments_cannot_be_refunded(
    client: stripe.StripeClient,
) -> None:
    held = await _paid(client, 2_000, capture_method="manual")
    with pytest.raises(stripe.InvalidRequestError) as uncaptured:
        await client.v1.refunds.create_async(params={"payment_intent": held.id})
    assert uncaptured.value.code == "charge_not_refundable"
    assert "not been captured" in uncaptured.value.user_message
    with pytest.raises(stripe.InvalidRequestError) as by_charge:
        await client.v1.refunds.create_async(params={"charge": held.latest_charge})
    assert by_charge.value.code == "charge_not_refundable"

    with pytest.raises(stripe.CardError) as declined:
        await _paid(client, 2_000, payment_method="pm_card_chargeDeclined")
    failed_id = declined.value.error.payment_intent.id
    with pytest.raises(stripe.InvalidRequestError) as failed:
        await client.v1.refunds.create_async(params={"payment_intent": failed_id})
    assert failed.value.code == "charge_not_refundable"

    with pytest.raises(stripe.InvalidRequestError) as neither:
        await client.v1.refunds.create_async(params={"amount": 100})
    assert "payment_intent or charge" in neither.value.user_message


async def test_refund_by_charge_and_update(client: stripe.StripeClient) -> None:
    pi = await _paid(client, 1_500)
    refund = await client.v1.refunds.create_async(
        params={"charge": pi.latest_charge, "amount": 500}
    )
    assert refund.payment_intent == pi.id
    updated = await client.v1.refunds.update_async(refund.id, params={"metadata": {"why": "late"}})
    assert updated.metadata.to_dict() == {"why": "late"}


async def test_concurrent_refunds_never_exceed_the_capture(client: stripe.StripeClient) -> None:
    pi = await _paid(client, 10_000)

    async def refund_1000() -> int | str:
        try:
            refund = await client.v1.refunds.create_async(
                params={"payment_intent": pi.id, "amount": 1_000}
            )
        except stripe.InvalidRequestError as error:
            return str(error.code)
        return int(refund.amount)

    outcomes = await asyncio.gather(*(refund_1000() for _ in range(25)))
    assert outcomes.count(1_000) == 10
    assert set(o for o in outcomes if o != 1_000) == {"charge_already_refunded"}
    charge = await client.v1.charges.retrieve_async(pi.latest_charge)
    assert (charge.amount_refunded, charge.refunded) == (10_000, True)
    listed = await client.v1.refunds.list_async(params={"payment_intent": pi.id, "limit": 100})
    assert sum(r.amount for r in listed.data) == 10_000


async def test_a_refund_of_the_refund_failure_card_succeeds_then_fails(
    client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    """Test mode's 4000 0000 0000 5126 (`pm_card_refundFail`): the refund is created
    succeeded and fails a moment later, its amount the charge's to refund again."""
    pi = await _paid(client, 5_000, payment_method="pm_card_refundFail")
    made = await client.v1.refunds.create_async(params={"payment_intent": pi.id})
    assert (made.status, made.failure_reason) == ("succeeded", None)
    [failed] = await receiver.wait_about_async(made.id, "refund.failed", timeout=10)
    assert failed.event["data"]["object"]["failure_reason"] == "expired_or_canceled_card"
    assert failed.event["data"]["previous_attributes"]["status"] == "succeeded"
    await receiver.wait_about_async(made.id, "refund.updated")
    await receiver.wait_about_async(made.id, "charge.refund.updated")
    got = await client.v1.refunds.retrieve_async(made.id)
    assert (got.status, got.failure_reason) == ("failed", "expired_or_canceled_card")
    assert got.failure_balance_transaction
    charge = await client.v1.charges.retrieve_async(pi.latest_charge)
    assert (charge.amount_refunded, charge.refunded) == (0, False)
    again = await client.v1.refunds.create_async(params={"payment_intent": pi.id, "amount": 1})
    assert again.amount == 1


async def test_the_admin_api_fails_a_succeeded_refund_once(
    client: stripe.StripeClient, admin: SandboxAdmin, receiver: WebhookReceiver
) -> None:
    pi = await _paid(client, 3_000)
    made = await client.v1.refunds.create_async(params={"payment_intent": pi.id, "amount": 1_000})
    got = await asyncio.to_thread(admin.fail_refund, made.id, "lost_or_stolen_card")
    assert (got["status"], got["failure_reason"]) == ("failed", "lost_or_stolen_card")
    [event] = await receiver.wait_about_async(made.id, "refund.updated")
    assert event.event["data"]["object"]["status"] == "failed"
    charge = await client.v1.charges.retrieve_async(pi.latest_charge)
    assert charge.amount_refunded == 0
    with pytest.raises(httpx.HTTPStatusError) as again:  # failed already: 409
        await asyncio.to_thread(admin.fail_refund, made.id)
    assert again.value.response.status_code == 409


async def test_a_refund_refusal_fault_refuses_the_payments_refunds_outright(
    client: stripe.StripeClient, admin: SandboxAdmin
) -> None:
    # As Stripe refuses a refund it will not make (a payment method that cannot be refunded):
    # 400 invalid_request_error with its code, nothing refunded; other payments unaffected.
    pi, other = await _paid(client, 3_000), await _paid(client, 2_000)
    await asyncio.to_thread(admin.add_fault, "refund_refusal", payment_intent=pi.id, count=2)
    for _ in range(2):
        with pytest.raises(stripe.InvalidRequestError) as refused:
            await client.v1.refunds.create_async(params={"payment_intent": pi.id})
        assert refused.value.code == "charge_not_refundable"
    assert (
        await client.v1.refunds.create_async(params={"payment_intent": other.id})
    ).amount == 2_000
    charge = await client.v1.charges.retrieve_async(pi.latest_charge)
    assert charge.amount_refunded == 0
    listed = await client.v1.refunds.list_async(params={"payment_intent": pi.id})
    assert listed.data == []
    # Used up: the next refund is made.
    assert (await client.v1.refunds.create_async(params={"payment_intent": pi.id})).amount == 3_000
