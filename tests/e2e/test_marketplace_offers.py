"""The marketplace's offers end to end through HTTP, every process real (ESC-6, ESC-10): a
customer posts a job, a contractor asks for it, the customer sends two card offers, one contractor
accepts: the $1,000 offer is captured, $100 booked to platform revenue and $900 into the
engagement's escrow through provider clearing, the job is assigned, the other offer is rejected
and its authorization voided. Every wallet touched is asserted to the cent."""

from __future__ import annotations

import time

from hirepay.payments.v1 import payments_service_pb2 as ppb
from tests.e2e.conftest import System
from tests.e2e.credits_support import ledger, platform_delta
from tests.e2e.marketplace_support import new_user, ok, payment, send_offer


def test_a_card_offer_of_1000_dollars_accepted_with_every_wallet_to_the_cent(
    system: System,
) -> None:
    http = system.http
    customer, winner, loser = new_user("customer"), new_user("contractor"), new_user("contractor")
    posted = http.post(
        "/api/marketplace/jobs",
        json={"title": "Build a booking site", "description": "A small booking site in Django."},
        headers=system.headers(customer, "customer"),
    )
    job = ok(posted, 201)
    assert job["status"] == "open"
    refused = http.post(
        "/api/marketplace/jobs",
        json={"title": "Build a booking site", "description": "A small booking site in Django."},
        headers=system.headers(winner, "contractor"),
    )
    assert refused.status_code == 403 and refused.json()["error"] == "FORBIDDEN"

    # ESC-10: the contractor asks for the job, the customer accepts the request.
    asked = ok(
        http.post(
            "/api/job-request",
            json={"jobId": job["jobId"], "message": "Done ten of these."},
            headers=system.headers(winner, "contractor"),
        ),
        201,
    )
    assert asked["status"] == "pending"
    requests = ok(
        http.get(
            "/api/job-request",
            params={"jobId": job["jobId"]},
            headers=system.headers(customer, "customer"),
        )
    )["jobRequests"]
    assert [r["id"] for r in requests] == [asked["id"]]
    decided = ok(
        http.post(
            f"/api/job-request/{asked['id']}/decision",
            json={"decision": "accept"},
            headers=system.headers(customer, "customer"),
        )
    )
    assert decided["status"] == "accepted"

    platform_before = ledger(system, "platform")
    clearing_before = ledger(system, "provider:stripe")
    offer = send_offer(system, customer, job["jobId"], winner, 100_000)
    other = send_offer(system, customer, job["jobId"], loser, 50_000)
    assert (offer["state"], other["state"]) == ("pending", "pending")
    assert payment(system, offer["paymentId"]).state == ppb.Payment.AUTHORIZED
    # Bad input changes nothing: zero amount, someone else's job, another contractor's offer.
    zero = http.post(
        "/api/bidding",
        json={
            "jobId": job["jobId"],
            "contractorId": winner,
            "amount": {"amount_minor": 0, "currency": "USD"},
            "funding": "card",
            "paymentMethod": "pm_card_visa",
        },
        headers=system.headers(customer, "customer"),
    )
    assert zero.status_code == 400 and zero.json()["error"] == "VALIDATION_FAILED"
    stranger = new_user("customer")
    foreign = http.post(
        "/api/bidding",
        json={
            "jobId": job["jobId"],
            "contractorId": winner,
            "amount": {"amount_minor": 100, "currency": "USD"},
            "funding": "card",
            "paymentMethod": "pm_card_visa",
        },
        headers=system.headers(stranger, "customer"),
    )
    assert foreign.status_code == 404
    not_theirs = http.post(
        f"/api/bidding/{offer['id']}/accept", headers=system.headers(loser, "contractor")
    )
    assert not_theirs.status_code == 404
    assert (
        http.get(
            f"/api/bidding/{offer['id']}", headers=system.headers(stranger, "customer")
        ).status_code
        == 404
    )
    assert ledger(system, "platform") == platform_before

    accepted = ok(
        http.post(
            f"/api/bidding/{offer['id']}/accept", headers=system.headers(winner, "contractor")
        )
    )
    assert accepted["offer"]["state"] == "accepted"
    engagement = accepted["engagement"]
    assert engagement["state"] == "assigned"
    assert engagement["amount"] == {"amount_minor": 100_000, "currency": "USD"}
    assert engagement["acceptanceFee"] == {"amount_minor": 10_000, "currency": "USD"}
    assert engagement["escrow"] == {"amount_minor": 90_000, "currency": "USD"}

    captured = payment(system, offer["paymentId"])
    assert (captured.state, captured.captured_minor) == (ppb.Payment.CAPTURED, 100_000)
    # Every wallet touched, to the cent: $100 revenue, $900 escrow, -$1,000 provider clearing;
    # the customer paid by card, so no wallet of theirs moved.
    assert platform_delta(platform_before, ledger(system, "platform")) == {
        ("PLATFORM_REVENUE", "USD"): 10_000
    }
    assert dict(ledger(system, f"engagement:{engagement['id']}")) == {("ESCROW", "USD"): 90_000}
    assert platform_delta(clearing_before, ledger(system, "provider:stripe")) == {
        ("PROVIDER_CLEARING", "USD"): -100_000
    }
    assert dict(ledger(system, customer)) == {}
    assert dict(ledger(system, winner)) == {}

    job_now = ok(
        http.get(
            f"/api/marketplace/jobs/{job['jobId']}", headers=system.headers(customer, "customer")
        )
    )
    assert (job_now["status"], job_now["contractorId"], job_now["engagementId"]) == (
        "assigned",
        winner,
        engagement["id"],
    )
    deadline = time.monotonic() + 20
    while True:
        lost = ok(
            http.get(f"/api/bidding/{other['id']}", headers=system.headers(customer, "customer"))
        )
        if lost["offer"]["released"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (lost["offer"]["state"], lost["offer"]["reason"], lost["offer"]["released"]) == (
        "rejected",
        "another_offer_accepted",
        True,
    )
    assert payment(system, other["paymentId"]).state == ppb.Payment.VOIDED

    # Accepting twice is refused and moves nothing.
    again = http.post(
        f"/api/bidding/{offer['id']}/accept", headers=system.headers(winner, "contractor")
    )
    assert again.status_code == 409
    assert platform_delta(platform_before, ledger(system, "platform")) == {
        ("PLATFORM_REVENUE", "USD"): 10_000
    }
    received = ok(http.get("/api/bidding", headers=system.headers(winner, "contractor")))["offers"]
    assert [(o["id"], o["state"]) for o in received] == [(offer["id"], "accepted")]
