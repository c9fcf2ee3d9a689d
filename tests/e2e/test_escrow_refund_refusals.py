"""An engagement's cancellation refund refused outright at Stripe, with every process real
(sandbox, wallet, payments, jobs, gateway; ESC-1, ESC-8): the sandbox's `refund_refusal` fault
answers payments' refund `400 charge_not_refundable` (nothing refunded); payments records it
FAILED and refuses the step's refund (PAY-11 PAYMENT_NOT_REFUNDABLE); jobs ends the money step
`refund_refused` instead of retrying it forever, books the escrow and the fee to the engagement's
receivable (owed to the customer), counts it for the alert and the auditor reports it payable.
Then an admin records the customer paid back by bank transfer over HTTP (SEC-2): other roles
403, more than owed 409 with nothing changed, the same key twice concurrently settles once."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.e2e.conftest import System
from tests.e2e.credits_support import ledger, platform_delta
from tests.e2e.marketplace_support import CLEARING, act, card_engagement, new_user, ok, payment
from tests.e2e.test_consistency_auditor import report
from tests.support.waiting import eventually

OUTSIDE = "provider:outside"


def _engagement(system: System, engagement_id: str, user: str, role: str) -> dict[str, Any]:
    return ok(
        system.http.get(f"/api/engagements/{engagement_id}", headers=system.headers(user, role))
    )


def _payable(system: System, transfer_id: str) -> bool:
    found = {(v.check, v.subject_id) for v in report(system).violations}
    return ("escrow_refund_payable", transfer_id) in found


def _refused_total(system: System) -> float:
    jobs = system.stack.services["jobs"]
    text = httpx.get(f"http://127.0.0.1:{jobs.metrics_port}/metrics", timeout=10).text
    line = 'hirepay_escrow_refunds_refused_total{step="cancel"} '
    return next((float(r[len(line) :]) for r in text.splitlines() if r.startswith(line)), 0.0)


def _settle(system: System, engagement_id: str, user: str, role: str, key: str, amount: int):
    body = {"amountMinor": amount, "currency": "USD", "reference": "BANK-TRF-2026-0042"}
    return system.http.post(
        f"/api/admin/engagements/{engagement_id}/receivable/settlements",
        json=body,
        headers=system.headers(user, role, key=key),
    )


def test_a_refund_refused_outright_is_owed_to_the_customer_and_an_admin_settles_it_once(
    system: System,
) -> None:
    system.admin.clear_faults()
    customer, contractor = new_user("customer"), new_user("contractor")
    before = ledger(system, "platform"), ledger(system, "provider:stripe")
    outside_before = ledger(system, OUTSIDE)
    counted = _refused_total(system)
    engagement_id = card_engagement(system, customer, contractor, 100_000)
    payment_id = _engagement(system, engagement_id, customer, "customer")["paymentId"]
    intent = payment(system, payment_id).provider_payment_id
    system.admin.add_fault("refund_refusal", payment_intent=intent)
    try:
        ok(act(system, engagement_id, "cancel", customer, "customer"))  # before the start

        def refused() -> dict[str, Any] | None:
            found = _engagement(system, engagement_id, customer, "customer")
            assert found["steps"][0]["state"] == "refund_refused", found
            return found

        shown = eventually(refused, timeout=120)
    finally:
        system.admin.clear_faults()
    (step,) = shown["steps"]
    assert step["refusedMinor"] == 100_000 and step["refundTransferId"] is None
    assert (shown["state"], shown["owedToCustomerMinor"]) == ("cancelled", 100_000)
    receivable = f"engagement:{engagement_id}:receivable"
    # The escrow and the fee on the receivable, owed to the customer; the provider (clearing)
    # still has the money; nothing refunded at payments.
    assert eventually(lambda: dict(ledger(system, receivable)) == {CLEARING: 100_000}, timeout=60)
    assert dict(ledger(system, f"engagement:{engagement_id}")) == {("ESCROW", "USD"): 0}
    platform_before, clearing_before = before
    assert platform_delta(platform_before, ledger(system, "platform")) == {}
    assert platform_delta(clearing_before, ledger(system, "provider:stripe")) == {
        CLEARING: -100_000
    }
    assert payment(system, payment_id).refunded_minor == 0
    assert _refused_total(system) == counted + 1
    transfer = f"engagement:{engagement_id}:cancel"
    assert eventually(lambda: _payable(system, transfer), timeout=60)

    # Settled by an admin: other roles are refused, more than is owed changes nothing.
    assert _settle(system, engagement_id, customer, "customer", "k0", 100_000).status_code == 403
    over = _settle(system, engagement_id, "ops-1", "admin", "k1", 100_001)
    assert over.status_code == 409, over.text
    assert over.json()["error"] == "SETTLEMENT_EXCEEDS_OWED"
    assert dict(ledger(system, receivable)) == {CLEARING: 100_000}
    key = uuid.uuid4().hex
    with ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(
                lambda _: _settle(system, engagement_id, "ops-1", "admin", key, 100_000), range(2)
            )
        )
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert {
        (a.json()["owedToCustomerMinor"], a.json()["settledOutsideMinor"]) for a in answers
    } == {(0, 100_000)}
    assert dict(ledger(system, receivable)) == {CLEARING: 0}
    assert platform_delta(outside_before, ledger(system, OUTSIDE)) == {CLEARING: 100_000}
    assert eventually(lambda: not _payable(system, transfer) or None, timeout=120)
