"""Offer money refunded at Stripe's dashboard, outside Hirepay, with every process real (sandbox,
wallet, payments, jobs, gateway; ESC-1, ESC-8): the sandbox's `charge.refunded` webhook reaches
payments, which records the refund and publishes `payment.refunded` on the marketplace's stream;
jobs' marketplace consumer unwinds the escrow while it holds the money (the engagement cancelled,
the escrow and the fee back to provider clearing, the customer's wallet untouched) and, once the
escrow was released to the contractor, books the refund as owed from the engagement's receivable;
the ledger auditor finds every refund booked, the consistency report names what is owed; a partial
one followed by an admin's `refund` resolution refunds at Stripe only what is still due."""

from __future__ import annotations

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
    payment,
)
from tests.support.waiting import eventually


def _dashboard_refund(system: System, payment_id: str, amount_minor: int = 0) -> None:
    """A refund (in full, or of `amount_minor`) made with the secret key at Stripe itself, as its
    dashboard does."""
    intent = payment(system, payment_id).provider_payment_id
    client = stripe_client(system.stack.sandbox_url, DEV_STRIPE_KEY, allow_sync=True)
    params: dict[str, Any] = {"payment_intent": intent}
    if amount_minor:
        params["amount"] = amount_minor
    client.v1.refunds.create(params=params)


def _engagement(system: System, engagement_id: str, user: str, role: str) -> dict[str, Any]:
    return ok(
        system.http.get(f"/api/engagements/{engagement_id}", headers=system.headers(user, role))
    )


def test_an_offer_refunded_at_the_dashboard_while_in_escrow_is_unwound(system: System) -> None:
    system.admin.clear_faults()
    customer, contractor = new_user("customer"), new_user("contractor")
    platform_before = ledger(system, "platform")
    clearing_before = ledger(system, "provider:stripe")
    engagement_id = card_engagement(system, customer, contractor, 100_000)
    ok(act(system, engagement_id, "start", contractor, "contractor"))
    payment_id = _engagement(system, engagement_id, customer, "customer")["paymentId"]
    _dashboard_refund(system, payment_id)

    def cancelled() -> dict[str, Any] | None:
        got = _engagement(system, engagement_id, contractor, "contractor")
        return got if got["state"] == "cancelled" else None

    eventually(cancelled, timeout=60)
    # Every wallet to the cent: the escrow and the fee back to the provider's clearing (square
    # again: the provider paid the customer back), nothing to the customer's wallet, nothing owed.
    assert eventually(
        lambda: dict(ledger(system, f"engagement:{engagement_id}")) == {("ESCROW", "USD"): 0},
        timeout=30,
    )
    assert platform_delta(platform_before, ledger(system, "platform")) == {}
    assert platform_delta(clearing_before, ledger(system, "provider:stripe")) == {}
    assert dict(ledger(system, customer)) == {}
    assert dict(ledger(system, contractor)) == {}
    assert dict(ledger(system, f"engagement:{engagement_id}:receivable")) == {}
    # Complete after that: nothing left to pay out.
    late = act(system, engagement_id, "complete", customer, "customer")
    assert late.status_code == 409 and late.json()["error"] == "INVALID_TRANSITION"


def test_an_offer_refunded_at_the_dashboard_after_completion_is_owed(system: System) -> None:
    system.admin.clear_faults()
    customer, contractor = new_user("customer"), new_user("contractor")
    platform_before = ledger(system, "platform")
    clearing_before = ledger(system, "provider:stripe")
    engagement_id = card_engagement(system, customer, contractor, 100_000)
    ok(act(system, engagement_id, "start", contractor, "contractor"))
    ok(act(system, engagement_id, "complete", customer, "customer"))
    payment_id = _engagement(system, engagement_id, customer, "customer")["paymentId"]
    _dashboard_refund(system, payment_id)
    owed = {("PROVIDER_CLEARING", "USD"): -100_000}
    receivable = f"engagement:{engagement_id}:receivable"
    assert eventually(lambda: dict(ledger(system, receivable)) == owed, timeout=60)
    # No money created or lost: the contractor keeps the pay, revenue its fees, the provider's
    # clearing is square (the refund booked under payments' id for it), the debt is recorded.
    assert dict(ledger(system, contractor)) == {("USER", "USD"): 70_000}
    assert platform_delta(platform_before, ledger(system, "platform")) == {
        ("PLATFORM_REVENUE", "USD"): 30_000
    }
    assert CLEARING not in platform_delta(clearing_before, ledger(system, "provider:stripe"))
    assert _engagement(system, engagement_id, customer, "customer")["state"] == "completed"


def test_a_partial_dashboard_refund_then_an_admins_refund_refunds_only_the_rest(
    system: System,
) -> None:
    # $300 refunded at the dashboard while the escrow holds $900: owed, the escrow frozen by the
    # system's dispute; the admin resolves `refund` (the escrow back, the fee kept): the $300
    # the customer has back settles the receivable and payments refunds only $600 at Stripe.
    system.admin.clear_faults()
    customer, contractor, admin = new_user("customer"), new_user("contractor"), new_user("admin")
    platform_before = ledger(system, "platform")
    clearing_before = ledger(system, "provider:stripe")
    engagement_id = card_engagement(system, customer, contractor, 100_000)
    payment_id = _engagement(system, engagement_id, customer, "customer")["paymentId"]
    _dashboard_refund(system, payment_id, 30_000)

    def disputed() -> dict[str, Any] | None:
        got = _engagement(system, engagement_id, customer, "customer")
        return got if got["state"] == "disputed" and got.get("dispute") else None

    dispute_id = eventually(disputed, timeout=60)["dispute"]["id"]
    ok(
        system.http.post(
            f"/api/admin/disputes/{dispute_id}/resolve",
            json={"resolution": "refund"},
            headers=system.headers(admin, "admin"),
        )
    )
    receivable = f"engagement:{engagement_id}:receivable"
    assert eventually(
        lambda: (
            dict(ledger(system, f"engagement:{engagement_id}")) == {("ESCROW", "USD"): 0}
            and dict(ledger(system, receivable)) == {CLEARING: 0}
        ),
        timeout=60,
    )
    # Refunded once in all, $900 of $1,000: the provider holds the fee revenue keeps.
    assert eventually(lambda: payment(system, payment_id).refunded_minor == 90_000, timeout=30)
    assert platform_delta(platform_before, ledger(system, "platform")) == {
        ("PLATFORM_REVENUE", "USD"): 10_000
    }
    assert platform_delta(clearing_before, ledger(system, "provider:stripe")) == {CLEARING: -10_000}
    assert dict(ledger(system, customer)) == {}
    assert dict(ledger(system, contractor)) == {}
    assert _engagement(system, engagement_id, customer, "customer")["state"] == "cancelled"
