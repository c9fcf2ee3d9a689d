"""A refund of offer money that fails at Stripe after it succeeded (the card closed since, as test
mode's 4000 0000 0000 5126), with every process real (sandbox, wallet, payments, jobs, gateway;
ESC-1, ESC-8): the sandbox's `refund.failed` reaches payments, which reverses its record (the
payment refundable again) and publishes `payment.refund_failed` on the marketplace's stream;
jobs' marketplace consumer books the reversal once, provider clearing -> the engagement's
receivable, which then holds the money owed to the customer — for a refund made at the dashboard
that had unwound the escrow, and for the engagement's own cancellation refund."""

from __future__ import annotations

from typing import Any

import httpx

from hirepay.payments.v1 import payments_service_pb2 as ppb
from hirepay.payments.v1 import payments_service_pb2_grpc as ppb_grpc
from hirepay_dev.sandbox_client import stripe_client
from hirepay_dev.stack import DEV_STRIPE_KEY
from tests.e2e.conftest import System
from tests.e2e.credits_support import ledger, platform_delta
from tests.e2e.marketplace_support import CLEARING, act, card_engagement, new_user, ok, payment
from tests.e2e.test_consistency_auditor import report
from tests.support.service_auth import signed_channel
from tests.support.waiting import eventually


def _engagement(system: System, engagement_id: str, user: str) -> dict[str, Any]:
    headers = system.headers(user, "customer")
    return ok(system.http.get(f"/api/engagements/{engagement_id}", headers=headers))


def _refunds(system: System, payment_id: str) -> list[ppb.RefundRecord]:
    """The payment's refunds as payments records them (read as jobs does)."""
    target = system.stack.services["payments"].target
    with signed_channel(target, caller="jobs", service="payments") as channel:
        stub = ppb_grpc.PaymentsServiceStub(channel)
        request = ppb.GetPaymentRequest(payment_id=payment_id)
        return list(stub.GetPayment(request, timeout=5).refunds)


def _funded(system: System) -> tuple[str, str, str, Any]:
    """A $1,000 card offer accepted: its customer, engagement, payment, and the platform's
    balances before it."""
    system.admin.clear_faults()
    customer, contractor = new_user("customer"), new_user("contractor")
    before = ledger(system, "platform"), ledger(system, "provider:stripe")
    engagement_id = card_engagement(system, customer, contractor, 100_000)
    payment_id = _engagement(system, engagement_id, customer)["paymentId"]
    return customer, engagement_id, payment_id, before


def _owed_to_the_customer(system: System, engagement_id: str, customer: str, before) -> None:
    """The refund reversed: clearing has the money again, the receivable holds it for the
    customer; the escrow, revenue and every wallet as the refund had left them."""
    receivable = f"engagement:{engagement_id}:receivable"
    assert eventually(lambda: dict(ledger(system, receivable)) == {CLEARING: 100_000}, timeout=60)
    platform_before, clearing_before = before
    assert platform_delta(clearing_before, ledger(system, "provider:stripe")) == {
        CLEARING: -100_000
    }
    assert platform_delta(platform_before, ledger(system, "platform")) == {}
    assert dict(ledger(system, f"engagement:{engagement_id}")) == {("ESCROW", "USD"): 0}
    assert dict(ledger(system, customer)) == {}
    assert _engagement(system, engagement_id, customer)["state"] == "cancelled"


def _reported_payable(system: System, transfer_id: str, refund: str) -> None:
    """The auditor names the reversal as money owed to the customer (a known state), and the
    reversal is counted for the alert."""

    def named() -> bool:
        found = {(v.check, v.subject_id) for v in report(system).violations}
        return ("escrow_refund_payable", transfer_id) in found

    assert eventually(named, timeout=60)
    jobs = system.stack.services["jobs"]
    text = httpx.get(f"http://127.0.0.1:{jobs.metrics_port}/metrics", timeout=10).text
    line = f'hirepay_escrow_refunds_failed_after_success_total{{refund="{refund}"}} '
    assert next(float(row[len(line) :]) for row in text.splitlines() if row.startswith(line)) >= 1


def test_a_dashboard_refund_that_unwound_the_escrow_failing_is_owed_to_the_customer(
    system: System,
) -> None:
    customer, engagement_id, payment_id, before = _funded(system)
    intent = payment(system, payment_id).provider_payment_id
    client = stripe_client(system.stack.sandbox_url, DEV_STRIPE_KEY, allow_sync=True)
    refund = client.v1.refunds.create(params={"payment_intent": intent})
    eventually(
        lambda: _engagement(system, engagement_id, customer)["state"] == "cancelled" or None,
        timeout=60,
    )
    system.admin.fail_refund(refund.id)

    _owed_to_the_customer(system, engagement_id, customer, before)
    # payments: the refund FAILED, the payment refundable again.
    assert eventually(lambda: payment(system, payment_id).refunded_minor == 0, timeout=30)
    (failed,) = _refunds(system, payment_id)
    assert failed.status == "FAILED"
    _reported_payable(
        system, f"payment:{payment_id}:refund:{failed.refund_id}:failed", "at_provider"
    )


def test_the_engagements_own_cancellation_refund_failing_is_owed_to_the_customer(
    system: System,
) -> None:
    customer, engagement_id, payment_id, before = _funded(system)
    ok(act(system, engagement_id, "cancel", customer, "customer"))  # before the start: all back
    (made,) = eventually(
        lambda: [r for r in _refunds(system, payment_id) if r.status == "SUCCEEDED"] or None,
        timeout=60,
    )
    assert made.request_id == f"engagement:{engagement_id}:cancel"
    receivable = f"engagement:{engagement_id}:receivable"
    assert eventually(
        lambda: dict(ledger(system, f"engagement:{engagement_id}")) == {("ESCROW", "USD"): 0},
        timeout=60,
    )
    assert dict(ledger(system, receivable)) == {}
    system.admin.fail_refund(made.provider_refund_id)

    _owed_to_the_customer(system, engagement_id, customer, before)
    assert eventually(lambda: payment(system, payment_id).refunded_minor == 0, timeout=30)
    _reported_payable(system, f"payment:{payment_id}:refund:{made.refund_id}:failed", "own")
