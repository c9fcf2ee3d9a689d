"""A posting fee refunded at Stripe's dashboard, outside Hirepay, with every process real (sandbox,
wallet, payments, jobs, gateway): the sandbox's `charge.refunded` webhook reaches payments
through the gateway, the refund is booked back out of platform revenue (ESC-1), the payment is
REFUNDED (API-4) and the settlement stream tells jobs: a fully refunded live posting is taken
down with payment_status `refunded` (PAY-4, PAY-5); a partial refund leaves it live. A card
dispute of the fee changes nothing while it is open, and ends the posting the same way once it
is lost (`payment.charged_back`), the withdrawal booked out of revenue once."""

from __future__ import annotations

from typing import Any

from hirepay_dev.sandbox_client import stripe_client
from hirepay_dev.stack import DEV_STRIPE_KEY
from tests.e2e.conftest import System, job_fields, new_company
from tests.e2e.test_consistency_auditor import report
from tests.support.waiting import eventually

FEE = 14_900  # engineering category, default price list


def _live_posting(system: System, company: str, card: str = "pm_card_visa") -> dict[str, Any]:
    response = system.http.post(
        "/api/jobs/create-with-payment",
        json={
            "job": job_fields(),
            "payment": {"method": "card", "payment_method": card},
            "accept_terms": True,
        },
        headers=system.headers(company, key="k1"),
    )
    assert response.status_code == 201, response.text
    job = response.json()["job"]
    assert job["status"] == "active" and job["payment_status"] == "completed"
    return job


def _intent_id(system: System, company: str) -> str:
    client = stripe_client(system.stack.sandbox_url, DEV_STRIPE_KEY, allow_sync=True)
    [intent] = client.v1.payment_intents.search(
        params={"query": f"metadata['company_id']:'{company}'"}
    ).data
    return str(intent.id)


def _dashboard_refund(system: System, intent_id: str, amount: int | None = None) -> None:
    """A refund made with the secret key at Stripe itself, as its dashboard does."""
    client = stripe_client(system.stack.sandbox_url, DEV_STRIPE_KEY, allow_sync=True)
    params: dict[str, Any] = {"payment_intent": intent_id}
    if amount is not None:
        params["amount"] = amount
    client.v1.refunds.create(params=params)


def _revenue_refunded(system: System, payment_id: str, kind: str = "refund") -> int | None:
    """What the payment's refund (or dispute) bookings took out of platform revenue (None: none
    yet)."""
    response = system.http.get(
        "/api/admin/transactions",
        params={"owner": "platform", "unit": "USD", "kind": "platform_revenue", "limit": 200},
        headers=system.headers("admin-1", role="admin"),
    )
    assert response.status_code == 200, response.text
    lines = [
        line
        for line in response.json()["transactions"]
        if line["transferId"].startswith(f"payment:{payment_id}:{kind}:")
    ]
    if not lines:
        return None
    return sum(int(line["amountMinor"]) for line in lines)


def test_a_posting_refunded_in_full_at_the_dashboard_is_taken_down_and_booked(
    system: System,
) -> None:
    system.admin.clear_faults()
    company = new_company()
    job = _live_posting(system, company)
    _dashboard_refund(system, _intent_id(system, company))

    def ended() -> dict[str, Any] | None:
        got = system.job(company, job["id"])
        return got if got["payment_status"] == "refunded" else None

    got = eventually(ended, timeout=30)
    assert got["status"] == "cancelled"  # no job stays live without its money (PAY-4)
    assert job["id"] not in system.public_job_ids()
    assert eventually(lambda: _revenue_refunded(system, got["payment_id"]), timeout=30) == -FEE
    assert system.money(company).taken == 0


def test_a_partial_dashboard_refund_leaves_the_posting_live(system: System) -> None:
    system.admin.clear_faults()
    company = new_company()
    job = _live_posting(system, company)
    _dashboard_refund(system, _intent_id(system, company), 4_900)
    assert eventually(lambda: _revenue_refunded(system, job["payment_id"]), timeout=30) == -4_900
    got = system.job(company, job["id"])
    assert (got["status"], got["payment_status"]) == ("active", "completed")
    assert job["id"] in system.public_job_ids()
    assert system.money(company).taken == FEE - 4_900
    # Live by design, so not "a job live without its money" to the consistency auditor (OPS-3).
    assert not [v for v in report(system).violations if v.subject_id == job["id"]]


def test_a_posting_charged_back_is_taken_down_once_its_dispute_is_lost(system: System) -> None:
    system.admin.clear_faults()
    company = new_company()
    # Stripe's test card that the cardholder disputes at once (the sandbox opens it on capture).
    job = _live_posting(system, company, card="pm_card_createDispute")
    withdrawn = eventually(lambda: _revenue_refunded(system, job["payment_id"], "dispute"), 30)
    assert withdrawn == -FEE  # open: withdrawn from revenue, held by Stripe while it runs
    got = system.job(company, job["id"])
    assert (got["status"], got["payment_status"]) == ("active", "completed")  # nothing yet
    client = stripe_client(system.stack.sandbox_url, DEV_STRIPE_KEY, allow_sync=True)
    intent = _intent_id(system, company)
    [dispute] = client.v1.disputes.list(params={"payment_intent": intent}).data
    system.admin.add_fault("webhook_duplicate", event_type="charge.dispute.*", times=3)
    system.admin.close_dispute(str(dispute.id), "lost")

    def ended() -> dict[str, Any] | None:
        got = system.job(company, job["id"])
        return got if got["payment_status"] == "refunded" else None

    got = eventually(ended, timeout=30)
    system.admin.clear_faults()
    assert got["status"] == "cancelled"  # no job stays live without its money (PAY-4)
    assert job["id"] not in system.public_job_ids()
    # Lost: nothing more moves (the withdrawal stays, once; no refund was made).
    assert _revenue_refunded(system, job["payment_id"], "dispute") == -FEE
    assert _revenue_refunded(system, job["payment_id"]) is None
