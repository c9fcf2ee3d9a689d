"""Coins end to end (ESC-3), every process real, through the gateway: a buyer opens a checkout,
pays on the provider's page while the provider delivers each webhook several times, and the coins
reach their COIN wallet once, the cash booked from the provider's clearing to the platform's
issuance; a declined payment issues nothing."""

from __future__ import annotations

import uuid

from tests.e2e.conftest import System
from tests.e2e.credits_support import ledger
from tests.support import wallet_reads
from tests.support.waiting import eventually

BODY = {
    "amountMinor": 1500,
    "currency": "USD",
    "returnUrl": "https://app.example/coins/bought",
    "cancelUrl": "https://app.example/coins/cancelled",
}


def _delivered(system: System) -> bool:
    """Every webhook the provider scheduled was delivered (duplicates too)."""
    backlog = system.admin.webhook_backlog()
    return backlog.get("pending", 0) == 0 and backlog.get("scheduled", 0) == 0


def test_coins_are_issued_once_through_the_gateway(system: System) -> None:
    system.admin.clear_faults()
    buyer = f"cu-{uuid.uuid4().hex[:10]}"
    clearing_before = ledger(system, "provider:stripe")
    platform_before = ledger(system, "platform")
    headers = system.headers(buyer, "customer", key="coins-1")
    opened = system.http.post("/api/coins/purchase", json=BODY, headers=headers)
    assert opened.status_code == 200, opened.text
    body = opened.json()
    assert (body["coins"], body["status"], body["provider"]) == (1500, "REQUIRES_ACTION", "stripe")
    again = system.http.post("/api/coins/purchase", json=BODY, headers=headers)
    assert again.json()["paymentId"] == body["paymentId"]  # one key, one purchase
    system.admin.add_fault("webhook_duplicate", times=5, event_type="checkout.session.*")
    system.admin.add_fault("webhook_duplicate", times=5, event_type="payment_intent.*")
    try:
        assert system.admin.pay_checkout(body["checkoutUrl"]).status_code == 303
        eventually(lambda: ledger(system, buyer) == {("USER", "COIN"): 1500}, timeout=30)
        eventually(lambda: _delivered(system), timeout=30)  # every duplicate applied
    finally:
        system.admin.clear_faults()
    assert ledger(system, buyer) == {("USER", "COIN"): 1500}
    assert wallet_reads.delta(clearing_before, ledger(system, "provider:stripe")) == {
        ("PROVIDER_CLEARING", "USD"): -1500
    }
    platform = wallet_reads.delta(platform_before, ledger(system, "platform"))
    assert platform[("ISSUANCE", "USD")] == 1500 and platform[("ISSUANCE", "COIN")] == -1500


def test_a_declined_coin_payment_issues_nothing(system: System) -> None:
    buyer = f"cu-{uuid.uuid4().hex[:10]}"
    opened = system.http.post(
        "/api/coins/purchase", json=BODY, headers=system.headers(buyer, "customer")
    )
    assert opened.status_code == 200, opened.text
    declined = system.admin.pay_checkout(opened.json()["checkoutUrl"], "4000 0000 0000 0002")
    assert declined.status_code == 402
    eventually(lambda: _delivered(system), timeout=30)
    assert ledger(system, buyer) == {}
