"""Connect: accounts, transfers to them, payouts paid or failed, and the Stripe-Account header."""

from __future__ import annotations

import pytest
import stripe

from hirepay_dev.sandbox_client import SandboxAdmin
from tests.support.webhook_receiver import WebhookReceiver


@pytest.fixture
async def account(client: stripe.StripeClient) -> stripe.Account:
    created: stripe.Account = await client.v1.accounts.create_async(
        params={"type": "express", "country": "US", "email": "pro@hirepay.test"}
    )
    return created


async def test_accounts(client: stripe.StripeClient, account: stripe.Account) -> None:
    assert account.id.startswith("acct_")
    assert (account.object, account.type, account.country) == ("account", "express", "US")
    assert account.payouts_enabled is True
    fetched = await client.v1.accounts.retrieve_async(account.id)
    assert fetched.email == "pro@hirepay.test"
    updated = await client.v1.accounts.update_async(
        account.id, params={"metadata": {"contractor": "c_1"}}
    )
    assert updated.metadata["contractor"] == "c_1"


async def test_transfers(
    client: stripe.StripeClient, account: stripe.Account, receiver: WebhookReceiver
) -> None:
    transfer = await client.v1.transfers.create_async(
        params={
            "amount": 7_000,
            "currency": "usd",
            "destination": account.id,
            "metadata": {"engagement": "e_9"},
            "transfer_group": "job_9",
        },
        options={"idempotency_key": f"transfer-{account.id}"},
    )
    assert transfer.id.startswith("tr_")
    assert (transfer.object, transfer.amount, transfer.destination) == (
        "transfer",
        7_000,
        account.id,
    )
    assert (transfer.reversed, transfer.amount_reversed) == (False, 0)
    assert transfer.metadata["engagement"] == "e_9"
    fetched = await client.v1.transfers.retrieve_async(transfer.id)
    assert fetched.transfer_group == "job_9"
    listed = await client.v1.transfers.list_async(params={"destination": account.id})
    assert [t.id for t in listed.data] == [transfer.id]
    created = await receiver.wait_about_async(transfer.id, "transfer.created")
    assert created[0].event["data"]["object"]["amount"] == 7_000

    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.transfers.create_async(
            params={"amount": 100, "currency": "usd", "destination": "acct_nobody"}
        )
    assert (raised.value.code, raised.value.param) == ("resource_missing", "destination")


async def test_payout_is_paid(client: stripe.StripeClient, receiver: WebhookReceiver) -> None:
    payout = await client.v1.payouts.create_async(
        params={"amount": 12_000, "currency": "usd", "metadata": {"withdrawal": "w_1"}}
    )
    assert payout.id.startswith("po_")
    assert (payout.object, payout.status, payout.amount) == ("payout", "pending", 12_000)
    paid = await receiver.wait_about_async(payout.id, "payout.paid")
    assert paid[0].event["data"]["object"]["status"] == "paid"
    assert paid[0].event["request"]["id"] is None  # an automatic event, not caused by a request
    assert (await client.v1.payouts.retrieve_async(payout.id)).status == "paid"


async def test_payout_failure_fault(
    client: stripe.StripeClient, admin: SandboxAdmin, receiver: WebhookReceiver
) -> None:
    admin.add_fault("payout_failure", count=1, failure_code="no_account")
    payout = await client.v1.payouts.create_async(params={"amount": 5_000, "currency": "usd"})
    failed = await receiver.wait_about_async(payout.id, "payout.failed")
    body = failed[0].event["data"]["object"]
    assert (body["status"], body["failure_code"]) == ("failed", "no_account")
    assert "No bank account" in body["failure_message"]
    stored = await client.v1.payouts.retrieve_async(payout.id)
    assert (stored.status, stored.failure_code) == ("failed", "no_account")
    assert receiver.about(payout.id, "payout.paid") == []

    next_one = await client.v1.payouts.create_async(params={"amount": 5_000, "currency": "usd"})
    await receiver.wait_about_async(next_one.id, "payout.paid")


async def test_connected_account_payouts_carry_the_account(
    client: stripe.StripeClient, account: stripe.Account, receiver: WebhookReceiver
) -> None:
    payout = await client.v1.payouts.create_async(
        params={"amount": 3_000, "currency": "usd"}, options={"stripe_account": account.id}
    )
    created = await receiver.wait_about_async(payout.id, "payout.created")
    assert created[0].event["account"] == account.id
    paid = await receiver.wait_about_async(payout.id, "payout.paid")
    assert paid[0].event["account"] == account.id

    mine = await client.v1.payouts.retrieve_async(payout.id, options={"stripe_account": account.id})
    assert mine.status == "paid"
    with pytest.raises(stripe.InvalidRequestError):  # not the platform's payout
        await client.v1.payouts.retrieve_async(payout.id)
    with pytest.raises(stripe.PermissionError):
        await client.v1.payouts.list_async(options={"stripe_account": "acct_unknown"})


async def test_invalid_payout(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.payouts.create_async(params={"amount": 0, "currency": "usd"})
    assert raised.value.param == "amount"
