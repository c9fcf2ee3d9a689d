"""ReconcileProvider's answer counts what the round read, found and booked of plan purchases
refunded at a provider that sends no refund event (OPS-3; Fatora's dashboard), against the
in-memory fakes: a refund in full booked (REFUNDED) and listed with its money, a refund in part
booked with its money and the credits kept, then the rest; a purchase whose refunds are all
booked is no find; a provider unreadable now is counted, not found; and the answer goes on the
wire as it is."""

from __future__ import annotations

from payments.domain.provider import OutcomeUnknown
from payments.entrypoints.conversions import reconciliation_msg
from payments.service_layer.handlers.audit import PurchaseRefundBooked, PurchaseRound
from tests.payments.unit.test_reconciled_purchase_refunds_plans15 import (
    PRICE,
    OneRefundProvider,
    SilentProvider,
    _deps,
    _paid_purchase,
    _provider,
    _round,
)


async def test_a_refund_in_full_is_found_booked_and_answered_once() -> None:
    deps = _deps(OneRefundProvider())
    intent = await _paid_purchase(deps)
    provider = _provider(deps)
    assert isinstance(provider, OneRefundProvider)
    assert (await _round(deps)).purchases == PurchaseRound(checked=1)
    provider.refund_at_dashboard(intent)
    found = await _round(deps)
    booked = PurchaseRefundBooked("txn_1", "fatora", PRICE, "USD", in_full=True)
    assert found.purchases == PurchaseRound(checked=1, found=1, booked=[booked])
    wire = reconciliation_msg(found)
    assert (wire.purchases_checked, wire.purchase_refunds_found) == (1, 1)
    [got] = wire.purchase_refunds_booked
    assert (got.transaction_id, got.provider, got.amount_minor, got.currency) == (
        "txn_1",
        "fatora",
        PRICE,
        "USD",
    )
    assert got.refunded_in_full
    # REFUNDED: no longer a paid purchase the rounds read.
    assert (await _round(deps)).purchases == PurchaseRound()


async def test_a_refund_in_part_then_the_rest_each_booked_and_answered_once() -> None:
    deps = _deps(SilentProvider())
    intent = await _paid_purchase(deps)
    provider = _provider(deps)
    provider.refund_outside(intent, 1_000)
    part = PurchaseRefundBooked("txn_1", "fatora", 1_000, "USD", in_full=False)
    assert (await _round(deps)).purchases == PurchaseRound(checked=1, found=1, booked=[part])
    # Its refunds all booked: read, not found again.
    assert (await _round(deps)).purchases == PurchaseRound(checked=1)
    provider.refund_outside(intent, PRICE - 1_000)
    rest = PurchaseRefundBooked("txn_1", "fatora", PRICE - 1_000, "USD", in_full=True)
    assert (await _round(deps)).purchases == PurchaseRound(checked=1, found=1, booked=[rest])


async def test_a_purchase_whose_provider_is_unreadable_now_is_counted_not_found() -> None:
    deps = _deps(OneRefundProvider())
    intent = await _paid_purchase(deps)
    provider = _provider(deps)
    assert isinstance(provider, OneRefundProvider)
    provider.refund_at_dashboard(intent)
    provider.script = [OutcomeUnknown("provider unreachable", timeout=False)]
    unread = await _round(deps)
    assert unread.purchases == PurchaseRound(unreadable=1)
    assert reconciliation_msg(unread).purchases_unreadable == 1
    assert (await _round(deps)).purchases.found == 1
