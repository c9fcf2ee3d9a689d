"""The consistency auditor hears of payments whose provider payments has not been able to read
for longer than its grace (OPS-3, round 11): `unreadable_payments` of ReconcileProvider become
`provider_unreadable` violations (HirepayReconciliationBlind warns of them). Before, unreadable
payments were only a count in a log line: a provider no longer configured left its payments
uncompared for good with nothing firing."""

from __future__ import annotations

from hirepay.payments.v1 import payments_service_pb2 as ppb
from jobs.domain.audit import Check, Violation
from tests.jobs.unit.test_audit_reconcile_answer_rec11 import _mismatch, _sources


async def test_payments_unreadable_past_the_grace_are_provider_unreadable_violations() -> None:
    blind = ppb.ProviderMismatch(
        payment_id="pay-blind",
        provider_payment_id="pay_razor",
        detail="provider razorpay unreadable since 2026-12-01T20:00:00+00:00",
        kind=ppb.ProviderMismatch.KIND_UNREADABLE,
    )
    reply = ppb.ReconcileProviderResponse(
        checked=2, unreadable=1, mismatches=[_mismatch("pay-new")], unreadable_payments=[blind]
    )
    sources, _ = _sources(reply)
    assert (await sources.provider()).violations == [
        Violation(Check.PROVIDER_MISMATCH, "pay-new", "d"),
        Violation(Check.PROVIDER_UNREADABLE, "pay-blind", blind.detail),
    ]


async def test_payments_unreadable_within_the_grace_are_no_violation() -> None:
    sources, _ = _sources(ppb.ReconcileProviderResponse(checked=2, unreadable=3))
    assert (await sources.provider()).violations == []
