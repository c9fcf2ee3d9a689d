"""Payouts through HTTP with every process real (issue 9 §5, ESC-9): a contractor paid $700 for a
completed $1,000 engagement connects a payout account and withdraws; a withdrawal the bank pays
leaves the wallet and is booked to the provider's clearing, one to a failing test bank account
returns the money to the cent, and one above the available balance is 402 and changes nothing."""

from __future__ import annotations

import uuid
from typing import Any

from hirepay_dev.sandbox_client import stripe_client
from hirepay_dev.stack import DEV_STRIPE_KEY
from tests.e2e.conftest import System
from tests.e2e.credits_support import ledger, platform_delta
from tests.e2e.marketplace_support import (
    CLEARING,
    act,
    card_engagement,
    new_user,
    ok,
    wallet_balances,
)
from tests.support.waiting import eventually

# Stripe's test bank account number whose payouts fail with `no_account` (sandbox README).
FAILING_BANK_ACCOUNT = "000111111116"


def _withdraw(system: System, contractor: str, amount: int):  # type: ignore[no-untyped-def]
    return system.http.post(
        "/api/wallet/withdrawals",
        json={"amount": {"amount_minor": amount, "currency": "USD"}},
        headers=system.headers(contractor, "contractor", key=uuid.uuid4().hex),
    )


def _settled(system: System, contractor: str, withdrawal_id: str) -> dict[str, Any]:
    got = ok(
        system.http.get(
            f"/api/wallet/withdrawals/{withdrawal_id}",
            headers=system.headers(contractor, "contractor"),
        )
    )
    assert got["status"] in ("paid", "failed"), got
    return got


def test_a_contractor_withdraws_the_700_dollars_paid_and_failed_payouts(system: System) -> None:
    customer, contractor = new_user("customer"), new_user("contractor")
    engagement_id = card_engagement(system, customer, contractor, 100_000)
    ok(act(system, engagement_id, "start", contractor, "contractor"))
    ok(act(system, engagement_id, "complete", customer, "customer"))
    assert wallet_balances(system, contractor, "contractor") == {"USD": (70_000, 0, 70_000)}

    account = ok(
        system.http.post(
            "/api/wallet/payout-account", headers=system.headers(contractor, "contractor")
        )
    )
    assert (account["status"], account["provider"]) == ("active", "stripe")
    assert account["providerAccountId"].startswith("acct_")
    clearing_before = ledger(system, "provider:stripe")

    # More than available: refused, nothing held, no withdrawal recorded.
    over = _withdraw(system, contractor, 70_001)
    assert over.status_code == 402 and over.json()["error"] == "INSUFFICIENT_FUNDS", over.text
    assert wallet_balances(system, contractor, "contractor") == {"USD": (70_000, 0, 70_000)}
    listed = ok(
        system.http.get("/api/wallet/withdrawals", headers=system.headers(contractor, "contractor"))
    )
    assert listed["withdrawals"] == []

    # Paid: the money leaves the wallet and is booked to the provider's clearing.
    started = ok(_withdraw(system, contractor, 45_000), 201)
    assert started["amount"] == {"amount_minor": 45_000, "currency": "USD"}
    paid = eventually(lambda: _settled(system, contractor, started["id"]), timeout=60)
    assert paid["status"] == "paid" and paid["failureCode"] is None
    assert paid["transferId"].startswith("tr_") and paid["payoutId"].startswith("po_")
    assert wallet_balances(system, contractor, "contractor") == {"USD": (25_000, 0, 25_000)}
    assert platform_delta(clearing_before, ledger(system, "provider:stripe")) == {CLEARING: 45_000}

    # The contractor's bank account becomes one whose payouts fail: the money comes back.
    stripe = stripe_client(system.stack.sandbox_url, DEV_STRIPE_KEY, allow_sync=True)
    stripe.v1.accounts.update(
        account["providerAccountId"],
        params={
            "external_account": {"object": "bank_account", "account_number": FAILING_BANK_ACCOUNT}
        },
    )
    sent = ok(_withdraw(system, contractor, 20_000), 201)
    failed = eventually(lambda: _settled(system, contractor, sent["id"]), timeout=60)
    assert (failed["status"], failed["failureCode"]) == ("failed", "no_account")
    assert wallet_balances(system, contractor, "contractor") == {"USD": (25_000, 0, 25_000)}
    assert platform_delta(clearing_before, ledger(system, "provider:stripe")) == {CLEARING: 45_000}
    assert dict(ledger(system, contractor)) == {("USER", "USD"): 25_000}

    listed = ok(
        system.http.get("/api/wallet/withdrawals", headers=system.headers(contractor, "contractor"))
    )
    assert [(w["id"], w["status"]) for w in listed["withdrawals"]] == [
        (sent["id"], "failed"),
        (started["id"], "paid"),
    ]
    hidden = system.http.get(
        f"/api/wallet/withdrawals/{started['id']}",
        headers=system.headers(new_user("contractor"), "contractor"),
    )
    assert hidden.status_code == 404
