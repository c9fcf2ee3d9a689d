"""Recruiter plans and credits end to end (CR-1..3, seed 003 + 004), through HTTP with every
process real: buy a plan on the hosted checkout, credits issued once on the wallet's ledger,
spent by posting; failed, forged and replayed payments; one subscription at a time; refunds."""

from __future__ import annotations

import json
import time

from tests.e2e.conftest import System, new_company
from tests.e2e.credits_support import (
    CANDIDATE,
    JOB,
    STRIPE_CLEARING,
    SWIFT_HIRE_USD,
    buy,
    checkout_events,
    credits,
    deliver,
    ledger,
    platform_delta,
    post_by_credits,
    signed,
    subscribe,
    verify,
    wait_credits,
    wait_status,
)


def test_the_catalogue_lists_what_the_caller_can_buy(system: System) -> None:
    company = system.http.get("/api/payments/plans", headers=system.headers(new_company()))
    assert company.status_code == 200, company.text
    plans = {p["code"]: p for p in company.json()["plans"]}
    assert set(plans) == {
        "FREE_LAUNCHPAD",
        "SWIFT_HIRE",
        "GROWTH_ENGINE",
        "ENTERPRISE_ELITE",
        "MONTHLY",
    }
    swift = plans["SWIFT_HIRE"]
    assert (swift["jobCredits"], swift["candidateCredits"], swift["maxJobPosts"]) == (2500, 50, 5)
    assert plans["GROWTH_ENGINE"]["maxJobPosts"] == 15 and plans["FREE_LAUNCHPAD"]["free"]
    assert plans["ENTERPRISE_ELITE"]["jobCredits"] == 999_999
    applicant = system.http.get("/api/payments/plans", headers=system.headers("ap-1", "applicant"))
    assert [(p["code"], p["userType"]) for p in applicant.json()["plans"]] == [
        ("MONTHLY", "APPLICANT")
    ]
    free = subscribe(system, new_company(), "FREE_LAUNCHPAD")
    assert free.status_code == 400 and free.json()["error"] == "VALIDATION_FAILED"


def test_free_launchpad_company_has_nothing_and_cannot_post_by_credits(system: System) -> None:
    company = new_company()
    body = credits(system, company)
    assert body == {
        "jobCredits": 0,
        "candidateCredits": 0,
        "maxJobPosts": 0,
        "creditsPerJobPost": 500,
        "plan": "FREE_LAUNCHPAD",
        "subscription": None,
    }
    refused = post_by_credits(system, company, 1)
    assert refused.status_code == 402 and refused.json()["error"] == "INSUFFICIENT_CREDITS"
    assert ledger(system, company)[("USER", JOB)] == 0


def test_buy_swift_hire_then_post_five_jobs_and_the_sixth_is_refused(system: System) -> None:
    company = new_company()
    platform_before = ledger(system, "platform")
    clearing_before = ledger(system, STRIPE_CLEARING)
    started = subscribe(system, company, "SWIFT_HIRE")
    assert started.status_code == 200, started.text
    txn = started.json()["transactionId"]
    assert (started.json()["subscriptionStatus"], started.json()["paymentStatus"]) == (
        "Hold",
        "created",
    )
    held = verify(system, company, txn)
    # Seed 003: the order's subscription is on Hold until a verified payment.
    assert (held["status"], held["subscriptionStatus"], held["paymentStatus"]) == (
        "PENDING",
        "Hold",
        "created",
    )
    assert credits(system, company)["jobCredits"] == 0
    system.admin.pay_checkout(started.json()["checkoutUrl"])
    paid = wait_status(system, company, txn, "SUCCESS")
    assert (paid["subscriptionStatus"], paid["paymentStatus"]) == ("Active", "paid")
    assert (paid["jobCredits"], paid["candidateCredits"]) == (2500, 50)
    body = wait_credits(system, company, 2500, 50)
    assert body["maxJobPosts"] == 5 and body["plan"] == "SWIFT_HIRE"
    assert body["subscription"]["transactionId"] == txn
    assert body["subscription"]["endDate"] == paid["subscriptionEndDate"]
    # The ledger: credits from issuance to the company, the money from the provider's clearing
    # account to revenue.
    assert ledger(system, company) == {("USER", JOB): 2500, ("USER", CANDIDATE): 50}
    delta = platform_delta(platform_before, ledger(system, "platform"))
    assert delta[("ISSUANCE", JOB)] == -2500 and delta[("ISSUANCE", CANDIDATE)] == -50
    assert delta[("PLATFORM_REVENUE", "USD")] == SWIFT_HIRE_USD
    clearing = platform_delta(clearing_before, ledger(system, STRIPE_CLEARING))
    assert clearing == {("PROVIDER_CLEARING", "USD"): -SWIFT_HIRE_USD}

    revenue_before = ledger(system, "platform")[("PLATFORM_REVENUE", JOB)]
    for n in range(5):
        posted = post_by_credits(system, company, n)
        assert posted.status_code == 201, posted.text
        assert posted.json()["job"]["status"] == "active"
        assert credits(system, company)["maxJobPosts"] == 4 - n
    sixth = post_by_credits(system, company, 5)
    assert sixth.status_code == 402 and sixth.json()["error"] == "INSUFFICIENT_CREDITS"
    assert credits(system, company)["jobCredits"] == 0
    assert ledger(system, company)[("USER", JOB)] == 0
    revenue_after = ledger(system, "platform")[("PLATFORM_REVENUE", JOB)]
    assert revenue_after - revenue_before == 2500


def test_a_failed_plan_payment_issues_nothing(system: System) -> None:
    company = new_company()
    platform_before = ledger(system, "platform")
    txn = buy(system, company, "GROWTH_ENGINE", card="4000 0000 0000 0002")
    failed = wait_status(system, company, txn, "FAILED")
    assert (failed["subscriptionStatus"], failed["paymentStatus"]) == ("Failed", "failed")
    body = credits(system, company)
    assert (body["jobCredits"], body["candidateCredits"], body["subscription"]) == (0, 0, None)
    # Nothing of this purchase reached the ledger: no account was even opened for the company,
    # no credit left issuance and no money was booked.
    assert ledger(system, company) == {}
    assert platform_delta(platform_before, ledger(system, "platform")) == {}
    assert verify(system, company, txn)["subscriptionStartDate"] is None


def test_duplicated_and_replayed_verifications_issue_credits_once(system: System) -> None:
    company = new_company()
    system.admin.add_fault("webhook_duplicate", times=3)
    started = subscribe(system, company, "SWIFT_HIRE").json()
    system.admin.pay_checkout(started["checkoutUrl"])
    wait_status(system, company, started["transactionId"], "SUCCESS")
    wait_credits(system, company, 2500, 50)
    system.admin.clear_faults()
    # Replay every provider event about this checkout, freshly signed, several times.
    cs = started["checkoutUrl"].rstrip("/").rsplit("/", 1)[-1]
    events = checkout_events(system, cs)
    assert events, "the provider recorded the checkout's events"
    for _ in range(3):
        for event in events:
            replay = deliver(system, event)
            assert replay.status_code == 200, replay.text
            assert replay.json()["duplicate"] is True
    assert credits(system, company)["jobCredits"] == 2500
    assert ledger(system, company) == {("USER", JOB): 2500, ("USER", CANDIDATE): 50}


def test_a_forged_signature_changes_nothing(system: System) -> None:
    company = new_company()
    started = subscribe(system, company, "ENTERPRISE_ELITE").json()
    txn = started["transactionId"]
    cs = started["checkoutUrl"].rstrip("/").rsplit("/", 1)[-1]
    forged_event = {
        "id": "evt_forged_paid",
        "object": "event",
        "type": "checkout.session.completed",
        "created": 1_700_000_000,
        "data": {"object": {"id": cs, "object": "checkout.session", "payment_status": "paid"}},
    }
    refused = deliver(system, forged_event, signature="t=1,v1=" + "0" * 64)
    assert refused.status_code == 400 and refused.json()["error"] == "INVALID_SIGNATURE"
    body = json.dumps(forged_event).encode()
    wrong_key = deliver(system, forged_event, signature=signed(body, "whsec_attacker"))
    assert wrong_key.status_code == 400 and wrong_key.json()["error"] == "INVALID_SIGNATURE"
    body = verify(system, company, txn)
    assert (body["status"], body["subscriptionStatus"]) == ("PENDING", "Hold")
    assert credits(system, company)["jobCredits"] == 0 and ledger(system, company) == {}


def test_one_active_subscription_and_purchases_accumulate(system: System) -> None:
    company = new_company()
    # Two orders opened before either is paid: both are honoured, the second starts when the
    # first ends, and the credits add up.
    first = subscribe(system, company, "SWIFT_HIRE", key="order-1").json()
    second = subscribe(system, company, "SWIFT_HIRE", key="order-2").json()
    system.admin.pay_checkout(first["checkoutUrl"])
    one = wait_status(system, company, first["transactionId"], "SUCCESS")
    wait_credits(system, company, 2500, 50)
    again = subscribe(system, company, "GROWTH_ENGINE")
    assert again.status_code == 409 and again.json()["error"] == "ALREADY_SUBSCRIBED"
    assert again.json()["expiresAt"].startswith(one["subscriptionEndDate"])
    system.admin.pay_checkout(second["checkoutUrl"])
    two = wait_status(system, company, second["transactionId"], "SUCCESS")
    assert two["subscriptionStartDate"] == one["subscriptionEndDate"]
    assert two["subscriptionStatus"] == "Scheduled"
    body = wait_credits(system, company, 5000, 100)
    assert body["maxJobPosts"] == 10
    assert ledger(system, company) == {("USER", JOB): 5000, ("USER", CANDIDATE): 100}


def test_a_refunded_subscription_revokes_its_unused_credits(system: System) -> None:
    company = new_company()
    txn = buy(system, company, "SWIFT_HIRE")
    wait_status(system, company, txn, "SUCCESS")
    wait_credits(system, company, 2500, 50)
    for n in range(2):
        assert post_by_credits(system, company, n).status_code == 201
    platform_before = ledger(system, "platform")
    clearing_before = ledger(system, STRIPE_CLEARING)
    path = f"/api/payments/transactions/{txn}/refund"
    assert system.http.post(path, headers=system.headers(company)).status_code == 403
    refunded = system.http.post(
        path, json={"reason": "requested_by_customer"}, headers=system.headers("ops", "admin")
    )
    assert refunded.status_code == 200, refunded.text
    body = refunded.json()
    assert body["status"] == "REFUNDED" and body["revocationDone"] is True
    assert body["revoked"] == {"jobCredits": 1500, "candidateCredits": 50}
    assert body["used"] == {"jobCredits": 1000, "candidateCredits": 0}
    shown = verify(system, company, txn)
    assert (shown["status"], shown["subscriptionStatus"], shown["paymentStatus"]) == (
        "REFUNDED",
        "Refunded",
        "refunded",
    )
    after = credits(system, company)
    assert (after["jobCredits"], after["candidateCredits"], after["subscription"]) == (0, 0, None)
    assert ledger(system, company) == {("USER", JOB): 0, ("USER", CANDIDATE): 0}
    delta = platform_delta(platform_before, ledger(system, "platform"))
    assert delta[("ISSUANCE", JOB)] == 1500 and delta[("ISSUANCE", CANDIDATE)] == 50
    assert delta[("PLATFORM_REVENUE", "USD")] == -SWIFT_HIRE_USD
    clearing = platform_delta(clearing_before, ledger(system, STRIPE_CLEARING))
    assert clearing == {("PROVIDER_CLEARING", "USD"): SWIFT_HIRE_USD}
    # The provider refunded the payment once; a repeat refunds nothing more.
    repeat = system.http.post(path, headers=system.headers("ops", "admin"))
    assert repeat.status_code == 200 and repeat.json()["revoked"] == body["revoked"]
    assert ledger(system, company) == {("USER", JOB): 0, ("USER", CANDIDATE): 0}
    # The refunded company may buy again.
    assert subscribe(system, company, "SWIFT_HIRE").status_code == 200


def test_credits_owed_while_the_wallet_is_down_are_issued_once_it_is_back(
    system: System,
) -> None:
    """The settlement records what the purchase owes the ledger in its own transaction; the grant
    worker retries until the wallet acknowledges, and the transfer's id makes it happen once."""
    company = new_company()
    wallet = system.stack.services["wallet"]
    started = subscribe(system, company, "SWIFT_HIRE").json()
    try:
        wallet.stop()
        system.admin.pay_checkout(started["checkoutUrl"])
        wait_status(system, company, started["transactionId"], "SUCCESS")
        down = system.http.get("/api/credits", headers=system.headers(company))
        assert down.status_code == 503, down.text  # credits cannot be read, none were lost
    finally:
        wallet.restart()
    body = wait_credits(system, company, 2500, 50)
    assert body["maxJobPosts"] == 5
    time.sleep(3)  # a few more worker rounds: nothing is issued twice
    assert ledger(system, company) == {("USER", JOB): 2500, ("USER", CANDIDATE): 50}
