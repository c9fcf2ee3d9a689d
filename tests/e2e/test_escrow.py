"""The escrow end to end through HTTP, every process real (ESC-4, ESC-7, ESC-8, ESC-11): the seed's
$1,000 card offer — $100 to the platform on acceptance, $200 on completion, $700 to the
contractor — with every wallet touched asserted to the cent (customer, contractor, platform
revenue, escrow, provider clearing); a card cancelled before work starts refunded in full through
the provider; a coin job payment (402 when short) cancelled after work started (escrow back, the
fee kept); disputes resolved each way by an admin, once; others' engagements 404, admin routes 403."""

from __future__ import annotations

import uuid
from typing import Any

from hirepay.payments.v1 import payments_service_pb2 as ppb
from tests.e2e.conftest import System
from tests.e2e.credits_support import ledger, platform_delta
from tests.e2e.marketplace_support import (
    CLEARING,
    COIN_REVENUE,
    USD_REVENUE,
    act,
    card_engagement,
    issue_coins,
    market_job,
    new_user,
    ok,
    payment,
)
from tests.support.waiting import eventually


def test_the_1000_dollar_offer_pays_100_200_and_700_to_the_cent(system: System) -> None:
    customer, contractor, stranger = (
        new_user("customer"),
        new_user("contractor"),
        new_user("customer"),
    )
    platform_before = ledger(system, "platform")
    clearing_before = ledger(system, "provider:stripe")
    engagement_id = card_engagement(system, customer, contractor, 100_000)
    assert platform_delta(platform_before, ledger(system, "platform")) == {USD_REVENUE: 10_000}

    # Others do not see it; a party may not do the other party's part.
    hidden = system.http.get(
        f"/api/engagements/{engagement_id}", headers=system.headers(stranger, "customer")
    )
    assert hidden.status_code == 404
    assert act(system, engagement_id, "complete", stranger, "customer").status_code == 404
    early = act(system, engagement_id, "complete", customer, "customer")
    assert early.status_code == 409 and early.json()["error"] == "INVALID_TRANSITION"
    assert act(system, engagement_id, "start", customer, "customer").status_code == 403

    started = ok(act(system, engagement_id, "start", contractor, "contractor"))
    assert started["state"] == "in_progress"
    done = ok(act(system, engagement_id, "complete", customer, "customer"))
    assert done["state"] == "completed"
    (step,) = done["steps"]
    assert step == {
        "kind": "complete",
        "state": "done",
        "transferId": f"engagement:{engagement_id}:complete",
        "refundTransferId": None,
        "toRevenueMinor": 20_000,
        "toContractorMinor": 70_000,
        "toCustomerMinor": 0,
        "refusedMinor": 0,  # nothing refused by the provider (round 15's field)
    }
    # Every wallet to the cent: $100 + $200 to the platform, $700 to the contractor, the escrow
    # empty, the provider's clearing -$1,000 (the card's money), the customer's wallets untouched.
    assert platform_delta(platform_before, ledger(system, "platform")) == {USD_REVENUE: 30_000}
    assert dict(ledger(system, contractor)) == {("USER", "USD"): 70_000}
    assert dict(ledger(system, f"engagement:{engagement_id}")) == {("ESCROW", "USD"): 0}
    assert platform_delta(clearing_before, ledger(system, "provider:stripe")) == {
        CLEARING: -100_000
    }
    assert dict(ledger(system, customer)) == {}

    twice = act(system, engagement_id, "complete", customer, "customer")
    assert twice.status_code == 409 and twice.json()["error"] == "INVALID_TRANSITION"
    assert dict(ledger(system, contractor)) == {("USER", "USD"): 70_000}
    assert platform_delta(platform_before, ledger(system, "platform")) == {USD_REVENUE: 30_000}


def test_a_card_engagement_cancelled_before_work_is_refunded_in_full(system: System) -> None:
    customer, contractor = new_user("customer"), new_user("contractor")
    platform_before = ledger(system, "platform")
    clearing_before = ledger(system, "provider:stripe")
    engagement_id = card_engagement(system, customer, contractor, 25_000)
    cancelled = ok(
        act(system, engagement_id, "cancel", customer, "customer", json={"reason": "plans changed"})
    )
    assert cancelled["state"] == "cancelled"
    (step,) = cancelled["steps"]
    assert (step["state"], step["toCustomerMinor"]) == ("done", 25_000)
    assert step["refundTransferId"].startswith(f"payment:{cancelled['paymentId']}:refund:")
    refunded = payment(system, cancelled["paymentId"])
    assert (refunded.state, refunded.refunded_minor) == (ppb.Payment.REFUNDED, 25_000)
    # The fee came back too; the provider's clearing is square again.
    assert platform_delta(platform_before, ledger(system, "platform")) == {}
    assert platform_delta(clearing_before, ledger(system, "provider:stripe")) == {}
    assert dict(ledger(system, f"engagement:{engagement_id}")) == {("ESCROW", "USD"): 0}
    assert dict(ledger(system, contractor)) == {}


def _coin_engagement(system: System, customer: str, contractor: str, coins: int) -> str:
    job_id = market_job(system, customer)
    paid = system.http.post(
        "/api/coins/job-payment",
        json={"jobId": job_id, "freelancerId": contractor, "amount": coins},
        headers=system.headers(customer, "customer", key=uuid.uuid4().hex),
    )
    body = ok(paid, 201)
    assert (body["state"], body["funding"], body["unit"]) == ("assigned", "coins", "COIN")
    return str(body["id"])


def test_coin_job_payment_and_cancel_after_work_started(system: System) -> None:
    customer, contractor = new_user("customer"), new_user("contractor")
    issue_coins(system, customer, 10_000)
    short = system.http.post(
        "/api/coins/job-payment",
        json={"jobId": market_job(system, customer), "freelancerId": contractor, "amount": 10_001},
        headers=system.headers(customer, "customer"),
    )
    assert short.status_code == 402 and short.json()["error"] == "INSUFFICIENT_FUNDS"
    assert dict(ledger(system, customer)) == {("USER", "COIN"): 10_000}

    platform_before = ledger(system, "platform")
    engagement_id = _coin_engagement(system, customer, contractor, 10_000)
    assert dict(ledger(system, customer)) == {("USER", "COIN"): 0}
    assert dict(ledger(system, f"engagement:{engagement_id}")) == {("ESCROW", "COIN"): 9_000}
    assert platform_delta(platform_before, ledger(system, "platform")) == {COIN_REVENUE: 1_000}

    ok(act(system, engagement_id, "start", contractor, "contractor"))
    ok(act(system, engagement_id, "cancel", customer, "customer"))
    assert dict(ledger(system, customer)) == {("USER", "COIN"): 9_000}  # the 10% kept
    assert dict(ledger(system, f"engagement:{engagement_id}")) == {("ESCROW", "COIN"): 0}
    assert platform_delta(platform_before, ledger(system, "platform")) == {COIN_REVENUE: 1_000}


def test_disputes_freeze_the_escrow_and_are_resolved_once_each_way(system: System) -> None:
    customer, contractor, admin = new_user("customer"), new_user("contractor"), new_user("admin")
    issue_coins(system, customer, 30_000)
    platform_before = ledger(system, "platform")
    ids = [_coin_engagement(system, customer, contractor, 10_000) for _ in range(3)]
    disputes = []
    for engagement_id in ids:
        ok(act(system, engagement_id, "start", contractor, "contractor"))
        opened = ok(
            act(
                system, engagement_id, "dispute", contractor, "contractor",
                json={"reason": "the customer will not sign off"},
            )
        )  # fmt: skip
        assert opened["state"] == "disputed" and opened["dispute"]["state"] == "open"
        frozen = act(system, engagement_id, "complete", customer, "customer")
        assert frozen.status_code == 409 and frozen.json()["error"] == "ESCROW_FROZEN"
        disputes.append(opened["dispute"]["id"])

    assert system.http.get(
        "/api/admin/disputes", headers=system.headers(customer, "customer")
    ).status_code == 403  # fmt: skip
    listed = ok(
        system.http.get(
            "/api/admin/disputes",
            params={"state": "open", "pageSize": 200},
            headers=system.headers(admin, "admin"),
        )
    )
    assert set(disputes) <= {d["id"] for d in listed["disputes"]}
    forbidden = system.http.post(
        f"/api/admin/disputes/{disputes[0]}/resolve",
        json={"resolution": "release"},
        headers=system.headers(customer, "customer"),
    )
    assert forbidden.status_code == 403

    decisions = [
        {"resolution": "release"},
        {"resolution": "refund"},
        {"resolution": "split", "contractorMinor": 4_000},
    ]
    for dispute_id, decision in zip(disputes, decisions, strict=True):
        resolved = ok(
            system.http.post(
                f"/api/admin/disputes/{dispute_id}/resolve",
                json=decision,
                headers=system.headers(admin, "admin"),
            )
        )
        assert resolved["dispute"]["state"] == "resolved"
        again = system.http.post(
            f"/api/admin/disputes/{dispute_id}/resolve",
            json={"resolution": "refund"},
            headers=system.headers(admin, "admin"),
        )
        assert again.status_code == 409 and again.json()["error"] == "DISPUTE_ALREADY_RESOLVED"

    # release: 2,000 fee + 7,000 contractor; refund: 9,000 back; split: 4,000 / 5,000 back.
    assert dict(ledger(system, contractor)) == {("USER", "COIN"): 7_000 + 4_000}
    assert dict(ledger(system, customer)) == {("USER", "COIN"): 9_000 + 5_000}
    assert platform_delta(platform_before, ledger(system, "platform")) == {
        COIN_REVENUE: 3 * 1_000 + 2_000
    }
    for engagement_id in ids:
        assert dict(ledger(system, f"engagement:{engagement_id}")) == {("ESCROW", "COIN"): 0}


def test_a_direct_job_payment_issues_coins_into_escrow_once(system: System) -> None:
    """ESC-5 through every process: the checkout opened for the job, paid on the provider's page
    while every webhook arrives several times; the coins issued and the escrow funded in one
    ledger transfer, the engagement assigned with its escrow id once; then the usual completion."""
    customer, contractor = new_user("customer"), new_user("contractor")
    job_id = market_job(system, customer)
    platform_before = ledger(system, "platform")
    opened = ok(
        system.http.post(
            "/api/payments/job-payment",
            json={
                "jobId": job_id,
                "freelancerId": contractor,
                "amount": 10_000,  # $100.00 = 10,000 coins at the default rate
                "returnUrl": "https://app.example/paid",
                "cancelUrl": "https://app.example/cancelled",
            },
            headers=system.headers(customer, "customer", key=uuid.uuid4().hex),
        ),
        201,
    )
    engagement_id = opened["engagement"]["id"]
    assert opened["engagement"]["state"] == "open" and opened["checkoutUrl"]
    system.admin.add_fault("webhook_duplicate", times=5, event_type="checkout.session.*")
    system.admin.add_fault("webhook_duplicate", times=5, event_type="payment_intent.*")
    try:
        assert system.admin.pay_checkout(opened["checkoutUrl"]).status_code == 303

        def assigned() -> dict[str, Any]:
            got = ok(
                system.http.get(
                    f"/api/engagements/{engagement_id}",
                    headers=system.headers(customer, "customer"),
                )
            )
            assert got["state"] == "assigned", got
            return got

        funded = eventually(assigned, timeout=60)
    finally:
        system.admin.clear_faults()
    assert funded["escrowAccountId"] and funded["paymentId"] == opened["paymentId"]
    assert (funded["unit"], funded["amountMinor"], funded["escrowMinor"]) == ("COIN", 10_000, 9_000)
    assert dict(ledger(system, f"engagement:{engagement_id}")) == {("ESCROW", "COIN"): 9_000}
    assert dict(ledger(system, customer)) == {("USER", "COIN"): 0}
    ok(act(system, engagement_id, "start", contractor, "contractor"))
    ok(act(system, engagement_id, "complete", customer, "customer"))
    assert dict(ledger(system, contractor)) == {("USER", "COIN"): 7_000}
    assert platform_delta(platform_before, ledger(system, "platform"))[COIN_REVENUE] == 3_000
