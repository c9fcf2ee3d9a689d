"""Applications and the applicant side end to end (ESC-10, CR-3, API-6): applicants subscribe,
see their premium status, apply and follow their applications; a company lists its applicants for
free and pays one candidate credit per applicant to open their details; nobody reaches another
user's data."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.e2e.conftest import System, new_company
from tests.e2e.credits_support import (
    CANDIDATE,
    JOB,
    apply,
    buy,
    credits,
    ledger,
    new_applicant,
    post_by_credits,
    subscribe,
    view,
    wait_credits,
    wait_status,
)


def _company_with_a_job(system: System) -> tuple[str, str]:
    company = new_company()
    txn = buy(system, company, "SWIFT_HIRE")
    wait_status(system, company, txn, "SUCCESS")
    wait_credits(system, company, 2500, 50)
    posted = post_by_credits(system, company, 0)
    assert posted.status_code == 201, posted.text
    return company, posted.json()["job"]["id"]


def _applications(system: System, company: str, job_id: str) -> list[dict]:
    listed = system.http.get(f"/api/jobs/{job_id}/applications", headers=system.headers(company))
    assert listed.status_code == 200, listed.text
    return listed.json()["applications"]


def test_an_applicant_subscribes_applies_and_follows_the_application(system: System) -> None:
    company, job_id = _company_with_a_job(system)
    applicant = new_applicant()
    me = system.headers(applicant, "applicant")
    status = system.http.get("/api/payments/status", headers=me).json()
    assert status == {
        "userType": "APPLICANT",
        "premium": False,
        "plan": None,
        "subscription": None,
        "jobCredits": None,
        "candidateCredits": None,
        "maxJobPosts": None,
    }
    started = subscribe(system, applicant, "MONTHLY", role="applicant")
    assert started.status_code == 200, started.text
    txn = started.json()["transactionId"]
    system.admin.pay_checkout(started.json()["checkoutUrl"])
    wait_status(system, applicant, txn, "SUCCESS", role="applicant")
    status = system.http.get("/api/payments/status", headers=me).json()
    assert status["premium"] is True and status["plan"] == "MONTHLY"
    assert status["subscription"]["transactionId"] == txn
    assert status["subscription"]["status"] == "Active"
    # An applicant's premium issues no credits and opens no ledger account.
    assert ledger(system, applicant) == {}

    applied = apply(system, applicant, job_id)
    assert applied.status_code == 201, applied.text
    application = applied.json()
    assert application["status"] == "pending" and application["jobId"] == job_id
    assert application["applicant"]["email"] == f"{applicant}@example.test"
    twice = apply(system, applicant, job_id)
    assert twice.status_code == 409 and twice.json()["error"] == "ALREADY_APPLIED"
    assert apply(system, applicant, "job_does_not_exist").status_code == 404

    decided = system.http.post(
        f"/api/applications/{application['id']}/decision",
        json={"decision": "accept"},
        headers=system.headers(company),
    )
    assert decided.status_code == 200 and decided.json()["status"] == "accepted"
    mine = system.http.get("/api/applications/mine", headers=me).json()["applications"]
    assert [(a["id"], a["status"]) for a in mine] == [(application["id"], "accepted")]
    again = system.http.post(
        f"/api/applications/{application['id']}/decision",
        json={"decision": "reject"},
        headers=system.headers(company),
    )
    assert again.status_code == 409


def test_nothing_an_applicant_does_reaches_another_users_data(system: System) -> None:
    company, job_id = _company_with_a_job(system)
    alice, bob = new_applicant(), new_applicant()
    application = apply(system, alice, job_id).json()
    bob_h = system.headers(bob, "applicant")
    assert system.http.get("/api/applications/mine", headers=bob_h).json()["applications"] == []
    # Bob cannot act as a company, read credits, list applicants, open or decide Alice's.
    assert system.http.get("/api/credits", headers=bob_h).status_code == 403
    assert system.http.get(f"/api/jobs/{job_id}/applications", headers=bob_h).status_code == 403
    assert (
        system.http.post(f"/api/applications/{application['id']}/view", headers=bob_h).status_code
        == 403
    )
    # Another company sees neither the job's applicants nor the applicant.
    other = new_company()
    assert (
        system.http.get(
            f"/api/jobs/{job_id}/applications", headers=system.headers(other)
        ).status_code
        == 404
    )
    assert view(system, other, application["id"]).status_code == 404
    decided = system.http.post(
        f"/api/applications/{application['id']}/decision",
        json={"decision": "reject"},
        headers=system.headers(other),
    )
    assert decided.status_code == 404
    # Bob cannot subscribe for Alice nor read her purchase (others' transactions look absent).
    own = subscribe(system, alice, "MONTHLY", role="applicant")
    assert own.status_code == 200  # Alice herself may
    stolen = system.http.post(
        "/api/payments/subscribe",
        json={
            "userType": "APPLICANT",
            "userId": alice,
            "email": "bob@example.test",
            "plan": "MONTHLY",
            "paymentMethod": "STRIPE",
            "returnUrl": "https://a.example/s",
            "cancelUrl": "https://a.example/c",
        },
        headers=bob_h,
    )
    assert stolen.status_code == 403
    txn = own.json()["transactionId"]
    assert system.http.get(f"/api/payments/verify/{txn}", headers=bob_h).status_code == 404
    assert _applications(system, company, job_id)[0]["applicant"] is None


def test_viewing_an_applicant_costs_one_credit_once(system: System) -> None:
    company, job_id = _company_with_a_job(system)
    applicant = new_applicant()
    application = apply(system, applicant, job_id).json()
    listed = _applications(system, company, job_id)
    assert [a["applicant"] for a in listed] == [None]  # the list is free and shows no details
    assert credits(system, company)["candidateCredits"] == 50
    first = view(system, company, application["id"])
    assert first.status_code == 200, first.text
    assert first.json()["charged"] is True
    assert first.json()["application"]["applicant"]["email"] == f"{applicant}@example.test"
    second = view(system, company, application["id"])
    assert second.status_code == 200 and second.json()["charged"] is False
    assert credits(system, company)["candidateCredits"] == 49
    assert ledger(system, company)[("USER", CANDIDATE)] == 49
    listed = _applications(system, company, job_id)
    assert listed[0]["applicant"]["applicantId"] == applicant


def test_twenty_concurrent_views_with_ten_credits_exactly_ten_succeed(system: System) -> None:
    company, job_id = _company_with_a_job(system)
    # Spend 40 of the 50 candidate credits, leaving 10.
    spent = [apply(system, new_applicant(), job_id).json()["id"] for _ in range(40)]
    for application_id in spent:
        assert view(system, company, application_id).status_code == 200
    assert credits(system, company)["candidateCredits"] == 10
    contested = [apply(system, new_applicant(), job_id).json()["id"] for _ in range(20)]
    platform_before = ledger(system, "platform")[("PLATFORM_REVENUE", CANDIDATE)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda a: view(system, company, a), contested))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] * 10 + [402] * 10, codes
    refused = [r.json() for r in answers if r.status_code == 402]
    assert all(body["error"] == "INSUFFICIENT_CREDITS" for body in refused)
    assert all("application" not in body for body in refused)  # nothing shown
    assert credits(system, company)["candidateCredits"] == 0
    assert ledger(system, company)[("USER", CANDIDATE)] == 0
    assert ledger(system, company)[("USER", JOB)] == 2000
    revenue = ledger(system, "platform")[("PLATFORM_REVENUE", CANDIDATE)]
    assert revenue - platform_before == 10
    # Exactly the ten that succeeded are unlocked; a refused one stays hidden and still costs.
    unlocked = {a["id"] for a in _applications(system, company, job_id) if a["applicant"]}
    succeeded = {a for a, r in zip(contested, answers, strict=True) if r.status_code == 200}
    assert succeeded <= unlocked and not (set(contested) - succeeded) & unlocked
    again = view(system, company, next(iter(set(contested) - succeeded)))
    assert again.status_code == 402
