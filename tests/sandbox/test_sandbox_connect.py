"""Connect: accounts, transfers to them, payouts paid or failed, and the Stripe-Account header."""

from __future__ import annotations

import httpx
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


async def test_a_closed_account_takes_no_transfers(client: stripe.StripeClient) -> None:
    closing = await client.v1.accounts.create_async(params={"type": "express"})
    deleted = await client.v1.accounts.delete_async(closing.id)
    assert (deleted.id, deleted.deleted) == (closing.id, True)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.transfers.create_async(
            params={"amount": 100, "currency": "usd", "destination": closing.id}
        )
    assert (raised.value.code, raised.value.param) == ("resource_missing", "destination")


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


async def test_a_payout_can_fail_after_it_was_paid(
    client: stripe.StripeClient, admin: SandboxAdmin, receiver: WebhookReceiver
) -> None:
    """Stripe: "some payouts that fail might initially show as paid, then change to failed" —
    the `after_paid` fault pays the payout, then the bank returns it; never the other way."""
    admin.add_fault("payout_failure", count=1, failure_code="account_closed", after_paid=True)
    payout = await client.v1.payouts.create_async(params={"amount": 3_000, "currency": "usd"})
    paid = await receiver.wait_about_async(payout.id, "payout.paid")
    assert paid[0].event["data"]["object"]["status"] == "paid"
    failed = await receiver.wait_about_async(payout.id, "payout.failed")
    body = failed[0].event["data"]["object"]
    assert (body["status"], body["failure_code"]) == ("failed", "account_closed")
    assert (await client.v1.payouts.retrieve_async(payout.id)).status == "failed"
    # The admin API returns a paid payout the same way; a failed one is never paid afterwards.
    other = await client.v1.payouts.create_async(params={"amount": 3_000, "currency": "usd"})
    await receiver.wait_about_async(other.id, "payout.paid")
    assert admin.settle_payout(other.id, "failed", "no_account")["status"] == "failed"
    await receiver.wait_about_async(other.id, "payout.failed")
    with pytest.raises(httpx.HTTPStatusError) as refused:
        admin.settle_payout(other.id, "paid")
    assert refused.value.response.status_code == 409


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


async def test_account_links_onboard_at_once(
    client: stripe.StripeClient, account: stripe.Account, sandbox_url: str
) -> None:
    link = await client.v1.account_links.create_async(
        params={
            "account": account.id,
            "type": "account_onboarding",
            "refresh_url": "https://hirepay.test/refresh",
            "return_url": "https://hirepay.test/return",
        }
    )
    assert link.object == "account_link"
    assert link.url.startswith(f"{sandbox_url}/connect/onboarding/")
    assert link.expires_at > link.created
    async with httpx.AsyncClient() as http:
        page = await http.get(link.url)
    assert (page.status_code, page.headers["location"]) == (303, "https://hirepay.test/return")
    # Usable at once: payouts are enabled and a bank account that pays is on file.
    fetched = await client.v1.accounts.retrieve_async(account.id)
    assert fetched.payouts_enabled is True
    bank = fetched.external_accounts.data[0]
    assert (bank.object, bank.last4) == ("bank_account", "6789")

    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.account_links.create_async(
            params={"account": "acct_nobody", "type": "account_onboarding"}
        )
    assert raised.value.param == "account"


@pytest.mark.parametrize(
    ("number", "code"),
    [("000111111116", "no_account"), ("000111111113", "account_closed")],
)
async def test_payout_to_a_test_bank_account_fails_with_its_code(
    client: stripe.StripeClient, receiver: WebhookReceiver, number: str, code: str
) -> None:
    failing = await client.v1.accounts.create_async(
        params={
            "type": "custom",
            "country": "US",
            "external_account": {
                "object": "bank_account",
                "country": "US",
                "currency": "usd",
                "routing_number": "110000000",
                "account_number": number,
            },
        }
    )
    assert failing.external_accounts.data[0].last4 == number[-4:]
    payout = await client.v1.payouts.create_async(
        params={"amount": 2_500, "currency": "usd"}, options={"stripe_account": failing.id}
    )
    assert payout.destination == failing.external_accounts.data[0].id
    failed = await receiver.wait_about_async(payout.id, "payout.failed")
    body = failed[0].event["data"]["object"]
    assert (body["status"], body["failure_code"]) == ("failed", code)
    assert failed[0].event["account"] == failing.id

    # The account's bank details are updated to a good number: the next payout is paid.
    await client.v1.accounts.update_async(
        failing.id, params={"external_account": {"account_number": "000123456789"}}
    )
    paid = await client.v1.payouts.create_async(
        params={"amount": 2_500, "currency": "usd"}, options={"stripe_account": failing.id}
    )
    await receiver.wait_about_async(paid.id, "payout.paid")


async def test_transfer_reversal(
    client: stripe.StripeClient, account: stripe.Account, receiver: WebhookReceiver
) -> None:
    transfer = await client.v1.transfers.create_async(
        params={"amount": 4_000, "currency": "usd", "destination": account.id}
    )
    reversal = await client.v1.transfers.reversals.create_async(
        transfer.id, options={"idempotency_key": f"reverse-{transfer.id}"}
    )
    assert reversal.id.startswith("trr_")
    assert (reversal.object, reversal.amount, reversal.transfer) == (
        "transfer_reversal",
        4_000,
        transfer.id,
    )
    again = await client.v1.transfers.reversals.create_async(
        transfer.id, options={"idempotency_key": f"reverse-{transfer.id}"}
    )
    assert again.id == reversal.id  # replayed, not reversed twice
    fetched = await client.v1.transfers.retrieve_async(transfer.id)
    assert (fetched.reversed, fetched.amount_reversed) == (True, 4_000)
    await receiver.wait_about_async(transfer.id, "transfer.reversed")
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await client.v1.transfers.reversals.create_async(transfer.id)
    assert raised.value.param == "amount"
