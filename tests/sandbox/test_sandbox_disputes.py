"""Disputes as Stripe's test mode makes them: the dispute card disputes a charge once captured
(funds withdrawn with the dispute fee), evidence wins or loses it (funds reinstated or not), an
inquiry moves no money, and the admin API disputes any captured charge."""

from __future__ import annotations

import httpx
import pytest
import stripe

from hirepay_dev.sandbox_client import SandboxAdmin
from tests.support.webhook_receiver import WebhookReceiver


async def _paid(
    client: stripe.StripeClient, payment_method: str, **extra: object
) -> stripe.PaymentIntent:
    params = {
        "amount": 5_000,
        "currency": "usd",
        "payment_method": payment_method,
        "confirm": True,
        **extra,
    }
    intent: stripe.PaymentIntent = await client.v1.payment_intents.create_async(params=params)  # type: ignore[arg-type]
    return intent


async def _dispute_of(client: stripe.StripeClient, intent: str) -> stripe.Dispute:
    listed = await client.v1.disputes.list_async(params={"payment_intent": intent})
    assert len(listed.data) == 1
    return listed.data[0]


async def test_the_dispute_card_is_disputed_with_its_funds_and_fee_withdrawn(
    client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    pi = await _paid(client, "pm_card_createDispute")
    assert pi.status == "succeeded"
    dispute = await _dispute_of(client, pi.id)
    assert (dispute.status, dispute.reason, dispute.amount, dispute.currency) == (
        "needs_response",
        "fraudulent",
        5_000,
        "usd",
    )
    assert (dispute.payment_intent, dispute.charge) == (pi.id, pi.latest_charge)
    [withdrawal] = dispute.balance_transactions
    assert (withdrawal.amount, withdrawal.fee, withdrawal.net) == (-5_000, 1_500, -6_500)
    assert withdrawal.fee_details[0].description == "Dispute fee"
    charge = await client.v1.charges.retrieve_async(pi.latest_charge)
    assert charge.disputed is True
    created = await receiver.wait_about_async(dispute.id, "charge.dispute.created")
    assert created[0].event["data"]["object"]["balance_transactions"] == []
    withdrawn = await receiver.wait_about_async(dispute.id, "charge.dispute.funds_withdrawn")
    assert len(withdrawn[0].event["data"]["object"]["balance_transactions"]) == 1


async def test_winning_evidence_reinstates_the_funds_and_losing_keeps_them_withdrawn(
    client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    won = await _dispute_of(client, (await _paid(client, "pm_card_createDispute")).id)
    won = await client.v1.disputes.update_async(
        won.id, params={"evidence": {"uncategorized_text": "winning_evidence"}}
    )
    assert won.status == "won"
    assert [bt.amount for bt in won.balance_transactions] == [-5_000, 5_000]
    await receiver.wait_about_async(won.id, "charge.dispute.funds_reinstated")
    closed = await receiver.wait_about_async(won.id, "charge.dispute.closed")
    assert closed[0].event["data"]["object"]["status"] == "won"

    lost = await _dispute_of(client, (await _paid(client, "pm_card_createDispute")).id)
    lost = await client.v1.disputes.update_async(
        lost.id, params={"evidence": {"uncategorized_text": "losing_evidence"}}
    )
    assert lost.status == "lost"
    assert [bt.amount for bt in lost.balance_transactions] == [-5_000]
    accepted = await _dispute_of(client, (await _paid(client, "pm_card_createDispute")).id)
    accepted = await client.v1.disputes.close_async(accepted.id)
    assert accepted.status == "lost"
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.disputes.close_async(accepted.id)


async def test_an_inquiry_moves_no_money_and_a_manual_capture_is_disputed_when_captured(
    client: stripe.StripeClient,
) -> None:
    inquiry = await _dispute_of(client, (await _paid(client, "pm_card_createDisputeInquiry")).id)
    assert (inquiry.status, inquiry.balance_transactions) == ("warning_needs_response", [])
    inquiry = await client.v1.disputes.close_async(inquiry.id)
    assert inquiry.status == "warning_closed"

    held = await _paid(client, "pm_card_createDispute", capture_method="manual")
    assert (await client.v1.disputes.list_async(params={"payment_intent": held.id})).data == []
    await client.v1.payment_intents.capture_async(held.id)
    assert (await _dispute_of(client, held.id)).status == "needs_response"


async def test_the_admin_api_disputes_a_captured_charge_and_closes_it(
    client: stripe.StripeClient, admin: SandboxAdmin
) -> None:
    pi = await _paid(client, "pm_card_visa")
    opened = admin.dispute_payment_intent(pi.id, reason="product_not_received")
    assert (opened["status"], opened["reason"]) == ("needs_response", "product_not_received")
    closed = admin.close_dispute(opened["id"], "lost")
    assert closed["status"] == "lost"
    assert [bt["amount"] for bt in closed["balance_transactions"]] == [-5_000]
    again = await _paid(client, "pm_card_visa")
    admin.dispute_payment_intent(again.id)
    with pytest.raises(httpx.HTTPStatusError) as refused:
        admin.dispute_payment_intent(again.id)
    assert refused.value.response.status_code == 409
