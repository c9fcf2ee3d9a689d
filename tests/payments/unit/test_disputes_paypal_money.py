"""PayPal's dispute money booked exactly (ESC-1, OPS-1, PAY-15), through the webhook handler
against fakes, balances asserted to the cent: a fee PayPal changes after it was first booked
books the difference under an id of its own (an older view applied late books nothing), so the
ledger ends at PayPal's final fee; a refund to the buyer in another currency than the held
amount is never compared with it (nothing converted: the release is booked only when PayPal's
seller credit says it in the held currency, else named in the audit entry and counted once); a
dispute of captures of several payments books each its share, split exactly (items, gross, or
pro rata to the gross amounts by largest remainder), what cannot be split named."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from payments.adapters import paypal_disputes
from payments.domain.disputes import Dispute, DisputeMoney, DisputeStatus
from payments.domain.provider import EventSubject, ProviderEvent
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import credits
from payments.service_layer.handlers.disputes import apply_dispute_event
from tests.payments.unit.test_disputes import (
    CLEARING,
    REVENUE,
    _captured,
    _metric,
    deps,
    provider,
)
from tests.payments.unit.test_disputes_paypal_razorpay import PAYPAL_DISPUTE
from tests.support.payments_fakes import DisputingProvider, FakeLedger

__all__ = ["deps", "provider"]  # the fixtures, shared with the Stripe dispute tests
FEES = ("provider:stripe:fees", "USD")  # the fake provider's name: its fees account
FEE_ID = "dp_1:fee:CHARGEBACK_FEE"


def _dispute(**changes: Any) -> dict[str, Any]:
    """The PayPal dispute of 149.00 USD with a 20.00 USD chargeback fee, as `dp_1`."""
    data = copy.deepcopy(PAYPAL_DISPUTE)
    data.update({"dispute_id": "dp_1", "update_time": "2026-12-01T10:00:00.000Z", **changes})
    return data


def _fee_movement(kind: str, value: str, at: str) -> dict[str, Any]:
    return {
        "affected_party": "SELLER",
        "amount": {"currency_code": "USD", "value": value},
        "initiated_time": at,
        "type": kind,
        "reason": "CHARGEBACK_FEE",
    }


async def _deliver(deps: Deps, provider: DisputingProvider, event_id: str, kind: str):  # type: ignore[no-untyped-def]
    event = ProviderEvent(
        id=event_id,
        type=f"CUSTOMER.DISPUTE.{kind}",
        created=datetime(2026, 12, 1, tzinfo=UTC),
        subject=EventSubject.DISPUTE,
        object_id="dp_1",
    )
    return await apply_dispute_event(deps, provider, event, {"id": event_id})


def _balances(deps: Deps) -> dict[tuple[str, str], int]:
    wallet = deps.ledger
    assert isinstance(wallet, FakeLedger)
    return {k: v for k, v in wallet.balances.items() if v}


async def test_a_fee_paypal_changes_books_each_difference_once_and_ends_at_its_final_amount(
    deps: Deps, provider: DisputingProvider
) -> None:
    payment_id, pi = await _captured(deps)
    await credits.settle_due_grants(deps)
    opened = _dispute()
    provider.disputes["dp_1"] = paypal_disputes.dispute_from(opened, pi)
    await _deliver(deps, provider, "WH-1", "CREATED")
    await credits.settle_due_grants(deps)
    # Held 149.00 out of revenue, the 20.00 fee an expense paid from clearing.
    assert _balances(deps) == {CLEARING: 2_000, FEES: -2_000}

    # PayPal raises its fee to 25.00 (a 5.00 debit of its own): two events, one redelivered.
    raised = _dispute(update_time="2026-12-01T11:00:00.000Z")
    raised["money_movements"].append(_fee_movement("DEBIT", "5.00", "2026-12-01T11:00:00.000Z"))
    provider.disputes["dp_1"] = paypal_disputes.dispute_from(raised, pi)
    for event_id in ("WH-2", "WH-2", "WH-3"):
        await _deliver(deps, provider, event_id, "UPDATED")
    await credits.settle_due_grants(deps)
    assert _balances(deps) == {CLEARING: 2_500, FEES: -2_500}

    # An older view (re-fetched before the change, applied after it) sets nothing back.
    provider.disputes["dp_1"] = paypal_disputes.dispute_from(opened, pi)
    late = await _deliver(deps, provider, "WH-4", "UPDATED")
    assert late is not None and not late.applied
    await credits.settle_due_grants(deps)
    assert _balances(deps) == {CLEARING: 2_500, FEES: -2_500}

    # Resolved for the seller, the fee given back in full: the hold released, the fee back to 0.
    won = _dispute(
        update_time="2026-12-02T09:00:00.000Z",
        status="RESOLVED",
        dispute_outcome={"outcome_code": "RESOLVED_SELLER_FAVOUR"},
    )
    won["money_movements"] += [
        _fee_movement("DEBIT", "5.00", "2026-12-01T11:00:00.000Z"),
        _fee_movement("CREDIT", "25.00", "2026-12-02T09:00:00.000Z"),
    ]
    provider.disputes["dp_1"] = paypal_disputes.dispute_from(won, pi)
    await _deliver(deps, provider, "WH-5", "RESOLVED")
    await _deliver(deps, provider, "WH-6", "UPDATED")  # the same view again: nothing more
    await credits.settle_due_grants(deps)
    assert _balances(deps) == {CLEARING: -14_900, REVENUE: 14_900}
    wallet = deps.ledger
    assert isinstance(wallet, FakeLedger)
    assert sorted(wallet.transfers) == sorted(
        [
            f"payment:{payment_id}:capture",
            f"payment:{payment_id}:dispute:dp_1:held",
            f"payment:{payment_id}:dispute:{FEE_ID}",
            f"payment:{payment_id}:dispute:{FEE_ID}:2",  # + 5.00
            f"payment:{payment_id}:dispute:{FEE_ID}:3",  # - 25.00
            f"payment:{payment_id}:dispute:dp_1:released",
        ]
    )
    async with deps.uow as uow:
        [dispute] = await uow.disputes.for_payment(payment_id)
    assert (dispute.status, dispute.withdrawn_minor, dispute.reinstated_minor) == (
        DisputeStatus.WON,
        14_900,
        14_900,
    )
    assert (dispute.fee_minor, dispute.provider_updated_at) == (
        0,
        datetime(2026, 12, 2, 9, tzinfo=UTC),
    )


def test_a_running_fee_owes_its_first_amount_then_each_difference() -> None:
    fee = DisputeMoney(FEE_ID, 0, 2_500, "USD", running=True)
    assert fee.adjustment([]) is fee
    assert fee.adjustment([(0, 2_000)]) == DisputeMoney(f"{FEE_ID}:2", 0, 500, "USD")
    assert fee.adjustment([(0, 2_000), (0, 500)]) is None
    assert replace(fee, fee_minor=0).adjustment([(0, 2_000), (0, 500)]) == DisputeMoney(
        f"{FEE_ID}:3", 0, -2_500, "USD"
    )


async def test_a_refund_in_another_currency_releases_nothing_it_cannot_know_and_says_so(
    deps: Deps, provider: DisputingProvider
) -> None:
    payment_id, pi = await _captured(deps)
    await credits.settle_due_grants(deps)
    counted = _metric(
        "hirepay_payment_dispute_money_unbooked_total", provider="stripe", why="refund_currency"
    )
    # The buyer kept 49.00 EUR: not 49.00 of the 149.00 USD held (never compared, never
    # converted), and PayPal credited the seller nothing in USD: the release is not known.
    lost = _dispute(
        status="RESOLVED",
        dispute_outcome={
            "outcome_code": "RESOLVED_BUYER_FAVOUR",
            "amount_refunded": {"currency_code": "EUR", "value": "49.00"},
        },
    )
    provider.disputes["dp_1"] = paypal_disputes.dispute_from(lost, pi)
    await _deliver(deps, provider, "WH-1", "RESOLVED")
    await _deliver(deps, provider, "WH-2", "UPDATED")  # a second event of the closed dispute
    await credits.settle_due_grants(deps)
    # The hold stays taken (exact); no release of 100.00 USD guessed from 49.00 EUR.
    assert _balances(deps) == {CLEARING: 2_000, FEES: -2_000}
    assert (
        _metric(
            "hirepay_payment_dispute_money_unbooked_total",
            provider="stripe",
            why="refund_currency",
        )
        == counted + 1  # once, as it closed
    )
    audit = [a for a in deps.uow.committed.audit if a.details.get("object_id") == "dp_1"]  # type: ignore[attr-defined]
    assert len(audit) == 2
    assert all("49.00 EUR" in a.details["unbooked"] for a in audit)
    async with deps.uow as uow:
        [dispute] = await uow.disputes.for_payment(payment_id)
    assert (dispute.status, dispute.withdrawn_minor, dispute.reinstated_minor) == (
        DisputeStatus.LOST,
        14_900,
        0,
    )


def test_a_refund_in_another_currency_releases_what_paypal_credited_in_the_held_one() -> None:
    data = _dispute(
        status="RESOLVED",
        dispute_outcome={
            "outcome_code": "ACCEPTED",
            "amount_refunded": {"currency_code": "EUR", "value": "45.00"},
        },
    )
    data["money_movements"].append(
        {
            "affected_party": "SELLER",
            "amount": {"currency_code": "USD", "value": "100.00"},
            "type": "CREDIT",
            "reason": "DISPUTE_SETTLEMENT",
        }
    )
    view = paypal_disputes.dispute_from(data, "ORDER-1")
    assert view.money[:2] == (
        DisputeMoney("dp_1:held", -14_900, 0, "USD"),
        DisputeMoney("dp_1:released", 10_000, 0, "USD"),
    )
    assert view.unbooked == ()
    # In the held currency, the refund is compared as before: the rest of the hold released.
    same = _dispute(
        status="RESOLVED",
        dispute_outcome={
            "outcome_code": "ACCEPTED",
            "amount_refunded": {"currency_code": "USD", "value": "49.00"},
        },
    )
    assert paypal_disputes.dispute_from(same, "ORDER-1").money[1] == DisputeMoney(
        "dp_1:released", 10_000, 0, "USD"
    )


def _of_two(value: str = "149.01", fee: str = "20.01", **changes: Any) -> dict[str, Any]:
    """`dp_1` of two captures of 149.00 USD each (3CAP, 4CAP): `value` disputed, `fee` charged."""
    data = _dispute(**changes)
    data["disputed_transactions"].append(
        dict(data["disputed_transactions"][0], seller_transaction_id="4CAP")
    )
    data["dispute_amount"] = {"currency_code": "USD", "value": value}
    data["money_movements"][0]["amount"]["value"] = value
    data["money_movements"][1]["amount"]["value"] = fee
    return data


def test_a_dispute_of_several_orders_is_split_exactly_by_the_first_rule_that_applies() -> None:
    """Items' disputed amounts when PayPal names them all (its own split), each capture in full
    when the dispute is of all of them, else the amount pro rata to the gross amounts by largest
    remainder; the release and the fees split by the shares: every sum exact."""
    two = ("ORDER-1", "ORDER-2")
    pro_rata = paypal_disputes.dispute_from(_of_two(), "", two)
    assert pro_rata.split == "pro_rata_gross" and not pro_rata.unbooked
    assert [(s.id, s.payment_id, s.amount_minor) for s in pro_rata.shares] == [
        ("dp_1/ORDER-1", "ORDER-1", 7_451),  # the odd cent to the first (a tie)
        ("dp_1/ORDER-2", "ORDER-2", 7_450),
    ]
    assert [m for s in pro_rata.shares for m in s.money] == [
        DisputeMoney("dp_1:ORDER-1:held", -7_451, 0, "USD"),
        DisputeMoney("dp_1:ORDER-1:fee:CHARGEBACK_FEE", 0, 1_001, "USD", running=True),
        DisputeMoney("dp_1:ORDER-2:held", -7_450, 0, "USD"),
        DisputeMoney("dp_1:ORDER-2:fee:CHARGEBACK_FEE", 0, 1_000, "USD", running=True),
    ]
    both = paypal_disputes.dispute_from(_of_two("298.00"), "", two)
    assert (both.split, [s.amount_minor for s in both.shares]) == ("gross", [14_900, 14_900])
    items = _of_two("100.00")
    for tx, value in zip(items["disputed_transactions"], ("30.00", "70.00"), strict=True):
        tx["items"] = [{"item_id": "1", "dispute_amount": {"currency_code": "USD", "value": value}}]
    by_items = paypal_disputes.dispute_from(items, "", two)
    assert (by_items.split, [s.amount_minor for s in by_items.shares]) == ("items", [3_000, 7_000])
    # Two captures of one order and one of another: the order's share is its captures' sum.
    three = _of_two("300.00")
    three["disputed_transactions"].append(
        dict(three["disputed_transactions"][0], seller_transaction_id="5CAP")
    )
    grouped = paypal_disputes.dispute_from(three, "", ("ORDER-1", "ORDER-2", "ORDER-1"))
    assert [(s.payment_id, s.amount_minor) for s in grouped.shares] == [
        ("ORDER-1", 20_000),
        ("ORDER-2", 10_000),
    ]
    # Resolved for the buyer with 100.01 refunded: 49.00 released, split by the shares.
    lost = _of_two(
        status="RESOLVED",
        dispute_outcome={
            "outcome_code": "RESOLVED_BUYER_FAVOUR",
            "amount_refunded": {"currency_code": "USD", "value": "100.01"},
        },
    )
    released = [
        m.amount_minor
        for s in paypal_disputes.dispute_from(lost, "", two).shares
        for m in s.money
        if m.id.endswith(":released")
    ]
    assert released == [2_450, 2_450]


def test_what_cannot_be_split_exactly_is_named_never_booked_on_another_payment() -> None:
    """A capture PayPal knows no order of keeps its share unbooked; a gross amount in another
    currency than the dispute's leaves no share known (nothing booked, named)."""
    unknown = paypal_disputes.dispute_from(_of_two("298.00"), "", ("ORDER-1", ""))
    assert [s.payment_id for s in unknown.shares] == ["ORDER-1"]
    assert unknown.shares[0].money[0] == DisputeMoney("dp_1:ORDER-1:held", -14_900, 0, "USD")
    assert "149.00 USD of captures whose order PayPal does not know" in unknown.unbooked[0]
    other = _of_two()
    other["disputed_transactions"][1]["gross_amount"] = {"currency_code": "EUR", "value": "9.00"}
    foreign = paypal_disputes.dispute_from(other, "", ("ORDER-1", "ORDER-2"))
    assert foreign.shares == () and "EUR" in foreign.unbooked[0]


async def test_a_dispute_of_several_payments_books_each_its_share_once(
    deps: Deps, provider: DisputingProvider
) -> None:
    """Each payment is recorded (`dp_1/<order>`) and booked its share, once whatever the
    deliveries; the fee raised later books each share's difference; GetPayment shows PayPal's
    dispute id; the balances move by the dispute's amount and fee exactly."""
    first, first_pi = await _captured(deps, "1")
    second, second_pi = await _captured(deps, "2")
    await credits.settle_due_grants(deps)
    before = _balances(deps)
    pair = (first_pi, second_pi)
    provider.disputes["dp_1"] = paypal_disputes.dispute_from(_of_two(), "", pair)
    done = await _deliver(deps, provider, "WH-1", "CREATED")
    assert done is not None and done.applied and not done.duplicate
    again = await _deliver(deps, provider, "WH-1", "CREATED")
    assert again is not None and again.duplicate
    other = await _deliver(deps, provider, "WH-2", "UPDATED")  # the same view: nothing new
    assert other is not None and not other.applied
    raised = _of_two(update_time="2026-12-01T11:00:00.000Z")
    raised["money_movements"].append(_fee_movement("DEBIT", "5.00", "2026-12-01T11:00:00Z"))
    provider.disputes["dp_1"] = paypal_disputes.dispute_from(raised, "", pair)
    assert (await _deliver(deps, provider, "WH-3", "UPDATED")).applied
    await credits.settle_due_grants(deps)
    after = _balances(deps)
    moved = {k: after.get(k, 0) - before.get(k, 0) for k in {*after, *before}}
    assert {k: v for k, v in moved.items() if v} == {
        REVENUE: -14_901,  # 74.51 + 74.50 back to the customers
        CLEARING: 14_901 + 2_501,
        FEES: -2_501,  # 20.01 + 5.00: 12.51 + 12.50
    }
    async with deps.uow as uow:
        shares = {}
        for payment_id in (first, second):
            [record] = await uow.disputes.for_payment(payment_id)
            shares[payment_id] = (record.id, record.withdrawn_minor, record.fee_minor)
            grants = await uow.credit_grants.for_payment(payment_id)
            assert sorted(g.kind.value for g in grants) == ["capture", *["dispute"] * 3]
    assert shares == {
        first: (f"dp_1/{first_pi}", 7_451, 1_251),
        second: (f"dp_1/{second_pi}", 7_450, 1_250),
    }
    splits = {
        a.payment_id: a.details.get("split")
        for a in deps.uow.committed.audit  # type: ignore[attr-defined]
        if a.details.get("object_id", "").startswith("dp_1/")
    }
    assert splits == {first: "pro_rata_gross", second: "pro_rata_gross"}


def test_a_lost_dispute_whose_money_came_back_in_part_is_no_full_charge_back() -> None:
    """Lost, with part of the held money released (the buyer got less): the customer does not
    have it all back, so the posting is not ended as after a full refund."""
    at = datetime(2026, 12, 1, tzinfo=UTC)
    lost = Dispute(
        "dp_1", "paypal", "p1", 14_900, "USD", "", DisputeStatus.LOST, at, at, 14_900, 9_900
    )
    assert not lost.charges_back_in_full(14_900, 0)
    assert lost.charges_back_in_full(14_900, 9_900)  # refunded the rest before
    assert replace(lost, reinstated_minor=0).charges_back_in_full(14_900, 0)
    assert replace(lost, withdrawn_minor=0, reinstated_minor=0).charges_back_in_full(14_900, 0)


async def test_a_dispute_of_several_payments_with_no_share_known_books_nothing_and_says_so(
    deps: Deps, provider: DisputingProvider
) -> None:
    """A capture's gross amount in another currency than the dispute's: no share is known, so
    nothing is recorded or booked on either payment; stored unapplied once, an audit entry on
    each, counted once."""
    first, first_pi = await _captured(deps, "1")
    second, second_pi = await _captured(deps, "2")
    await credits.settle_due_grants(deps)
    before = _balances(deps)
    why = {"provider": "stripe", "why": "several_payments"}
    counted = _metric("hirepay_payment_dispute_money_unbooked_total", **why)
    data = _of_two()
    data["disputed_transactions"][1]["gross_amount"] = {"currency_code": "EUR", "value": "9.00"}
    provider.disputes["dp_1"] = paypal_disputes.dispute_from(data, "", (first_pi, second_pi))
    done = await _deliver(deps, provider, "WH-1", "CREATED")
    assert done is not None and not done.applied and not done.duplicate
    assert (await _deliver(deps, provider, "WH-1", "CREATED")).duplicate
    await credits.settle_due_grants(deps)
    assert _balances(deps) == before
    async with deps.uow as uow:
        for payment_id in (first, second):
            assert await uow.disputes.for_payment(payment_id) == []
    noted = {
        a.payment_id: a.details["unbooked"]
        for a in deps.uow.committed.audit  # type: ignore[attr-defined]
        if a.details.get("object_id") == "dp_1"
    }
    assert set(noted) == {first, second}
    assert all("2 payments" in n and "EUR" in n for n in noted.values())
    assert deps.uow.committed.events == {"WH-1": False}  # type: ignore[attr-defined]
    assert _metric("hirepay_payment_dispute_money_unbooked_total", **why) == counted + 1
