"""Races on real PostgreSQL, each request in its own session and connection, all at once."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from hirepay_platform.errors import HirepayError
from hirepay_platform.tcc import TccBranch
from wallet.domain import commands as c
from wallet.domain.errors import HoldAlreadyResolved, HoldCancelled, InsufficientFunds
from wallet.domain.holds import HoldState
from wallet.domain.ledger import Leg
from wallet.domain.model import AccountKind
from wallet.domain.splits import Share
from wallet.service_layer import handlers as h

pytestmark = pytest.mark.usefixtures("sound")


async def _outcome(call) -> object:
    """The result of a call, or the reason of the domain error it raised."""
    try:
        return await call
    except HirepayError as exc:
        return exc.reason


async def test_fifty_concurrent_debits_take_exactly_what_is_affordable(ledger, deps):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1000)
    debits = [
        h.transfer(c.Transfer(f"d{i}-{ledger.tag}", (Leg(alice, bob, 30, "USD"),)), deps)
        for i in range(50)
    ]
    outcomes = await asyncio.gather(*(_outcome(d) for d in debits))
    reasons = Counter(o if isinstance(o, str) else "ok" for o in outcomes)
    assert reasons == {"ok": 33, "INSUFFICIENT_FUNDS": 17}  # 33 * 30 = 990 <= 1000 < 34 * 30
    assert await ledger.balances(alice, bob) == [(10, 0), (990, 0)]


async def test_fifty_concurrent_reservations_never_overdraw(ledger, deps):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1000)
    reserves = [
        h.reserve_hold(
            c.ReserveHold(TccBranch(f"g{i}-{ledger.tag}", "b"), alice, bob, 70, "USD"), deps
        )
        for i in range(50)
    ]
    # a concurrent plain debit competes for the same balance
    debit = h.transfer(c.Transfer(f"d-{ledger.tag}", (Leg(alice, bob, 65, "USD"),)), deps)
    outcomes = await asyncio.gather(*(_outcome(x) for x in [*reserves, debit]))
    held = sum(1 for o in outcomes[:-1] if not isinstance(o, str))
    debited = 0 if isinstance(outcomes[-1], str) else 65
    assert held * 70 + debited <= 1000 < (held + 1) * 70 + debited
    assert await ledger.balances(alice) == [(1000 - debited, held * 70)]


async def test_twenty_identical_transfers_make_one(ledger, deps):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1000)
    cmd = c.Transfer(f"once-{ledger.tag}", (Leg(alice, bob, 250, "USD"),), "twins")
    results = await asyncio.gather(*(h.transfer(cmd, deps) for _ in range(20)))
    assert sum(not r.replayed for r in results) == 1
    assert all(r.transfer == results[0].transfer for r in results)
    assert await ledger.balances(alice, bob) == [(750, 0), (250, 0)]


async def test_identical_reservations_of_one_branch_make_one_hold(ledger, deps):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1000)
    cmd = c.ReserveHold(TccBranch(f"g-{ledger.tag}", "b"), alice, bob, 600, "USD")
    results = await asyncio.gather(*(h.reserve_hold(cmd, deps) for _ in range(10)))
    assert sum(not r.replayed for r in results) == 1
    assert await ledger.balances(alice) == [(1000, 600)]


async def test_cancel_racing_reserve_never_leaves_a_reservation(ledger, deps):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 100_000)
    rng = random.Random(7)
    seen = Counter()
    for i in range(40):
        branch = TccBranch(f"race-{i}-{ledger.tag}", "payment")
        reserve = h.reserve_hold(c.ReserveHold(branch, alice, bob, 100, "USD"), deps)
        cancel = h.cancel_hold(c.CancelHold(branch), deps)
        calls = [("reserve", reserve), ("cancel", cancel)]
        rng.shuffle(calls)
        outcomes = dict(
            zip(
                [name for name, _ in calls],
                await asyncio.gather(*(_outcome(call) for _, call in calls)),
                strict=True,
            )
        )
        cancel_result = outcomes["cancel"]
        assert not isinstance(cancel_result, str)  # a Cancel always succeeds
        if cancel_result.null_compensation:
            assert outcomes["reserve"] == HoldCancelled.reason  # hanging Try refused
            seen["cancel first"] += 1
        else:
            assert outcomes["reserve"].hold.state is HoldState.PENDING  # as it was reserved
            assert cancel_result.hold.state is HoldState.CANCELLED
            seen["reserve first"] += 1
        # a late retry of the Try reserves nothing either way
        late = await _outcome(h.reserve_hold(c.ReserveHold(branch, alice, bob, 100, "USD"), deps))
        assert late == HoldCancelled.reason or late.hold.state is HoldState.CANCELLED
        assert await ledger.balances(alice) == [(100_000, 0)]
    assert sum(seen.values()) == 40


async def test_duplicate_confirms_racing_a_cancel_resolve_the_hold_once(ledger, deps):
    customer, contractor = await ledger.open("customer"), await ledger.open("contractor")
    revenue = await ledger.open("platform", AccountKind.PLATFORM_REVENUE)
    await ledger.fund(customer, 100_000)
    rng = random.Random(11)
    confirmed_total = 0
    winners = Counter()
    for i in range(30):
        branch = TccBranch(f"cc-{i}-{ledger.tag}", "payment")
        await h.reserve_hold(c.ReserveHold(branch, customer, contractor, 1000, "USD"), deps)
        confirm = c.ConfirmHold(
            branch, 800, (Share(revenue, 1000), Share(contractor, 9000)), contractor
        )
        calls = [
            ("confirm", h.confirm_hold(confirm, deps)),
            ("confirm", h.confirm_hold(confirm, deps)),
            ("cancel", h.cancel_hold(c.CancelHold(branch), deps)),
        ]
        rng.shuffle(calls)
        outcomes = await asyncio.gather(*(_outcome(call) for _, call in calls))
        by_name: dict[str, list[object]] = {"confirm": [], "cancel": []}
        for (name, _), outcome in zip(calls, outcomes, strict=True):
            by_name[name].append(outcome)
        if by_name["cancel"][0] == HoldAlreadyResolved.reason:
            winners["confirm"] += 1
            assert sorted(r.replayed for r in by_name["confirm"]) == [False, True]
            assert by_name["confirm"][0].transfer == by_name["confirm"][1].transfer
            confirmed_total += 800
        else:
            winners["cancel"] += 1
            assert by_name["cancel"][0].hold.state is HoldState.CANCELLED
            assert by_name["confirm"] == [HoldAlreadyResolved.reason] * 2
        hold = (await h.get_hold(c.GetHold(branch), deps)).hold
        assert hold.state in (HoldState.CONFIRMED, HoldState.CANCELLED)
    assert sum(winners.values()) == 30
    assert await ledger.balances(customer, contractor, revenue) == [
        (100_000 - confirmed_total, 0),
        (confirmed_total * 9 // 10, 0),
        (confirmed_total // 10, 0),
    ]


async def test_crossing_transfers_with_fees_do_not_deadlock(ledger, deps):
    """A->B and B->A at once, each paying a fee into the one revenue account: sorted row locks and
    shards-after-rows ordering mean no transaction waits in a cycle."""
    a, b = await ledger.open("a"), await ledger.open("b")
    revenue = await ledger.open("platform", AccountKind.PLATFORM_REVENUE)
    await ledger.fund(a, 10_000)
    await ledger.fund(b, 10_000)

    def pay(i: int):
        src, dst = (a, b) if i % 2 else (b, a)
        legs = (Leg(src, dst, 90, "USD"), Leg(src, revenue, 10, "USD"))
        return h.transfer(c.Transfer(f"x{i}-{ledger.tag}", legs), deps)

    outcomes = await asyncio.gather(*(_outcome(pay(i)) for i in range(60)))
    assert [o for o in outcomes if isinstance(o, str)] == []  # no CONFLICT (deadlock), no refusal
    assert await ledger.balances(a, b, revenue) == [(9700, 0), (9700, 0), (600, 0)]


async def test_concurrent_debits_of_the_revenue_account_never_overdraw_it(ledger, deps):
    payer, refunded = await ledger.open("payer"), await ledger.open("refunded")
    revenue = await ledger.open("platform", AccountKind.PLATFORM_REVENUE)
    await ledger.fund(payer, 1000)
    await h.transfer(c.Transfer(f"fee-{ledger.tag}", (Leg(payer, revenue, 500, "USD"),)), deps)
    calls = []
    for i in range(30):
        # fees keep arriving while refunds are taken out
        leg = Leg(payer, revenue, 10, "USD") if i % 3 == 0 else Leg(revenue, refunded, 40, "USD")
        calls.append(h.transfer(c.Transfer(f"m{i}-{ledger.tag}", (leg,)), deps))
    outcomes = await asyncio.gather(*(_outcome(call) for call in calls))
    assert {o for o in outcomes if isinstance(o, str)} <= {InsufficientFunds.reason}
    refunds = sum(1 for i, o in enumerate(outcomes) if i % 3 and not isinstance(o, str))
    fees = sum(1 for i, o in enumerate(outcomes) if i % 3 == 0 and not isinstance(o, str))
    assert fees == 10
    revenue_after = 500 + 10 * fees - 40 * refunds
    assert revenue_after >= 0
    assert await ledger.balances(revenue, refunded) == [(revenue_after, 0), (40 * refunds, 0)]
    assert refunds >= 12  # at least the 500 already there paid 12 refunds of 40
