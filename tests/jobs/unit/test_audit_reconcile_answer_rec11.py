"""The consistency auditor's reading of payments' ReconcileProvider answer (OPS-3): a round cut
short by its deadline answers what it found and what the last check found of the payments it did
not reach (`earlier_mismatches`); the auditor reports both, so a provider mismatch does not drop
out of its report in the rounds that do not check its payment."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from hirepay.payments.v1 import payments_service_pb2 as ppb
from jobs.adapters.consistency import GrpcConsistencySources
from jobs.domain.audit import BookedPurchaseRefund, Check, PurchaseRefunds, Violation


class _Client:
    def __init__(self, reply: ppb.ReconcileProviderResponse) -> None:
        self.reply = reply
        self.requests: list[Any] = []

    async def call(self, method: Any, request: Any) -> ppb.ReconcileProviderResponse:
        assert method == "ReconcileProvider"
        self.requests.append(request)
        return self.reply


def _sources(reply: ppb.ReconcileProviderResponse) -> tuple[GrpcConsistencySources, _Client]:
    client = _Client(reply)
    payments = SimpleNamespace(
        client=client, stub=SimpleNamespace(ReconcileProvider="ReconcileProvider")
    )
    sources = GrpcConsistencySources(
        payments,  # type: ignore[arg-type]
        SimpleNamespace(),  # type: ignore[arg-type]
        hold_grace_seconds=300,
        reconcile_limit=100,
    )
    return sources, client


def _mismatch(
    payment_id: str, kind: int = ppb.ProviderMismatch.KIND_CHARGE
) -> ppb.ProviderMismatch:
    return ppb.ProviderMismatch(
        payment_id=payment_id, provider_payment_id=f"pi-{payment_id}", detail="d", kind=kind
    )


async def test_a_partial_answer_reports_the_earlier_findings_of_the_payments_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reply = ppb.ReconcileProviderResponse(
        checked=8,
        left=16,
        unreadable=1,
        mismatches=[_mismatch("pay-new")],
        earlier_mismatches=[
            _mismatch("pay-old"),
            _mismatch("pay-ref", ppb.ProviderMismatch.KIND_REFUND),
        ],
    )
    sources, client = _sources(reply)
    caplog.set_level(logging.INFO, logger="jobs.adapters.consistency")
    assert (await sources.provider()).violations == [
        Violation(Check.PROVIDER_MISMATCH, "pay-new", "d"),
        Violation(Check.PROVIDER_MISMATCH, "pay-old", "d"),
        Violation(Check.PROVIDER_REFUND_MISMATCH, "pay-ref", "d"),
    ]
    assert client.requests == [ppb.ReconcileProviderRequest(limit=100)]
    assert "reconciliation checked 8 payments, 16 left, 1 unreadable" in caplog.text


async def test_a_whole_answer_is_reported_as_before() -> None:
    sources, _ = _sources(ppb.ReconcileProviderResponse(checked=3, mismatches=[_mismatch("p")]))
    got = await sources.provider()
    assert got.violations == [Violation(Check.PROVIDER_MISMATCH, "p", "d")]
    assert got.purchase_refunds == PurchaseRefunds()


async def test_the_purchases_refunds_found_and_booked_are_read_from_the_answer() -> None:
    """Purchases refunded at Fatora's dashboard that the reconciliation found and booked are in
    the auditor's round (and so in the admin's report), not violations: they are booked."""
    reply = ppb.ReconcileProviderResponse(
        checked=3,
        purchases_checked=7,
        purchase_refunds_found=2,
        purchase_refunds_booked=[
            ppb.PurchaseRefundBooked(
                transaction_id="txn_1",
                provider="fatora",
                amount_minor=4_900,
                currency="USD",
                refunded_in_full=True,
            )
        ],
        purchases_unreadable=1,
    )
    sources, _ = _sources(reply)
    got = await sources.provider()
    assert got.violations == []
    assert got.purchase_refunds == PurchaseRefunds(
        checked=7,
        found=2,
        booked=(BookedPurchaseRefund("txn_1", "fatora", 4_900, "USD", True),),
        unreadable=1,
    )
