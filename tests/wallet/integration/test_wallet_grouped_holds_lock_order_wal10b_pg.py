"""The lock order of a multi-round group of holds on real PostgreSQL (issue 13, a gap left by
afa8ff5). A Reserve repeated in a group (a twin of its branch) runs in a later round; when it names
another account, that round locked the account's row after the first round had locked its own, and
a row that sorts before them was then taken after a later one: against a concurrent group that
locks both in id order, a deadlock, PostgreSQL aborting one transaction and its group run again
(its callers told CONFLICT when every attempt lost). A group's first round now locks every account
row its rounds will reserve on, in id order, after every barrier row: so no group waits for an
account while holding one that sorts after it."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter

import pytest

from hirepay_platform.tcc import TccBranch
from tests.wallet.integration.lock_races import blocked_by, counting_uow, hold_account
from wallet.domain import commands as c
from wallet.service_layer import handlers as h
from wallet.service_layer.deps import Deps

pytestmark = pytest.mark.usefixtures("sound")

FUNDS = 1_000_000


def _branch(tag: str) -> TccBranch:
    return TccBranch(f"lo-{tag}-{uuid.uuid4().hex[:10]}", "payment")


async def test_a_repeated_reserve_on_another_account_takes_no_account_lock_out_of_order(
    ledger, uow, clock, sessions
):
    """Two groups meet on accounts low < high, arranged so that the one that can deadlock does
    if it locks out of order: group 1 reserves on high and then (a twin of its branch, round 2)
    on low; group 2 reserves on low and high (in id order). Group 1 is made to wait for high
    first (a test transaction holds it), then group 2 takes low and waits for high; high freed,
    group 1 gets it and (locking by rounds) waits for low, held by group 2: a deadlock. Locking
    every account of its rounds in id order up front, group 1 holds low before it waits for
    high, group 2 waits for group 1, and neither is run again (`_race_with_a_group_on_low_and_high`
    sets the race)."""
    low, high = sorted([await ledger.open("first"), await ledger.open("second")])
    payee = await ledger.open("payee")
    for account in (low, high):
        await ledger.fund(account, FUNDS)
    twin = _branch("twin")
    group1 = [
        c.ReserveHold(twin, high, payee, 100, "USD"),
        c.ReserveHold(twin, low, payee, 100, "USD"),  # the same hold id, another account
    ]
    outcomes, attempts = await _race_with_a_group_on_low_and_high(
        ledger, uow, clock, sessions, low, high, lambda d: h.reserve_holds(group1, d)
    )
    assert [o.error.reason if o.error else "new" for o in outcomes] == [
        "new",
        "IDEMPOTENCY_MISMATCH",
    ]
    # Each group ran once: no transaction was aborted by a deadlock.
    assert attempts == {"group1": 1, "group2": 1}
    assert await ledger.balances(low, high) == [(FUNDS, 1), (FUNDS, 101)]


WORKERS = 8
ROUNDS = 6


async def test_concurrent_groups_of_holds_with_repeated_reserves_never_deadlock(ledger, uow, clock):
    """Closed-loop callers sending groups of Reserves (some with a repeated Reserve naming another
    account) and then a group of Confirms (some with a Confirm refused and repeated) or a
    ResolveHolds confirming one and cancelling the other, on four shared accounts, all at once:
    no group's transaction is ever aborted by a deadlock (each runs once), every call gets the
    outcome its call alone would have, and the balances are exactly what was confirmed."""
    payers = sorted([await ledger.open(f"payer{i}") for i in range(4)])
    payee = await ledger.open("payee")
    for payer in payers:
        await ledger.fund(payer, FUNDS)
    attempts: Counter[str] = Counter()
    deps = Deps(uow=counting_uow(uow, attempts, "group"), clock=clock)
    moved: Counter[str] = Counter()
    groups = 0

    async def worker(w: int) -> None:
        nonlocal groups
        rng = random.Random(w)
        for i in range(ROUNDS):
            # Reserves on two of the shared accounts; the first one's branch repeated on an
            # account sorting before its own (the rare shape) in every other group.
            one, two = rng.sample(payers, 2)
            branches = [_branch(f"{w}-{i}-{k}") for k in range(2)]
            group = [
                c.ReserveHold(branches[0], one, payee, 10, "USD"),
                c.ReserveHold(branches[1], two, payee, 10, "USD"),
            ]
            lower = [p for p in payers if p < one]
            if i % 2 == 0 and lower:
                group.append(c.ReserveHold(branches[0], rng.choice(lower), payee, 10, "USD"))
            outcomes = await h.reserve_holds(group, deps)
            reasons = [o.error.reason if o.error else "new" for o in outcomes]
            assert reasons == ["new", "new", *["IDEMPOTENCY_MISMATCH"] * (len(group) - 2)]
            groups += 2
            if i % 3 == 0:  # the Confirms, then the Cancel's release
                batch = c.ResolveHolds((c.ConfirmHold(branches[0]), c.CancelHold(branches[1])))
                resolved = await h.resolve_holds(batch, deps)
                assert [o.error for o in resolved] == [None, None]
                moved[one] -= 10
                moved[payee] += 10
                continue
            confirms = [c.ConfirmHold(b) for b in branches]
            if i % 3 == 1:  # a Confirm refused, and repeated (next round) as it may be
                confirms[1:1] = [c.ConfirmHold(branches[1], 11)]
            confirmed = await h.confirm_holds(confirms, deps)
            reasons = [o.error.reason if o.error else "new" for o in confirmed]
            assert reasons == ["new", *["VALIDATION_FAILED"] * (len(confirms) - 2), "new"]
            moved[one] -= 10
            moved[two] -= 10
            moved[payee] += 20

    await asyncio.gather(*(worker(w) for w in range(WORKERS)))
    assert attempts["group"] == groups  # no group ran twice: no deadlock
    for payer in payers:
        assert await ledger.balances(payer) == [(FUNDS + moved[payer], 0)]
    assert await ledger.balances(payee) == [(moved[payee], 0)]


async def _race_with_a_group_on_low_and_high(
    ledger, uow, clock, sessions, low: str, high: str, group1
) -> tuple[list, Counter[str]]:
    """Group 1 (a coroutine function given its deps) made to wait for `high` first (a test
    transaction holds it), then a group of Reserves on `low` and `high` (in id order: it takes
    `low` and waits for `high`); `high` freed: group 1 runs on, and takes `low` only if it locks out
    of order (a deadlock). Group 1's outcomes, and the transactions each group opened."""
    payee = await ledger.open("other-payee")
    attempts: Counter[str] = Counter()

    def deps(name: str) -> Deps:
        return Deps(uow=counting_uow(uow, attempts, name), clock=clock)

    group2 = [
        c.ReserveHold(_branch("a"), low, payee, 1, "USD"),
        c.ReserveHold(_branch("b"), high, payee, 1, "USD"),
    ]
    async with sessions() as holder:
        blocker = await hold_account(holder, high)
        first = asyncio.create_task(group1(deps("group1")))
        waiting = await blocked_by(sessions, {blocker}, set())  # group 1, for `high`
        second = asyncio.create_task(h.reserve_holds(group2, deps("group2")))
        await blocked_by(sessions, {blocker, waiting}, {waiting})  # group 2, after it
        await holder.commit()
        outcomes1, outcomes2 = await asyncio.gather(first, second)
    assert [o.error for o in outcomes2] == [None, None]
    return outcomes1, attempts


async def _holds_on_low_and_high(ledger, deps) -> tuple[str, str, str, TccBranch, TccBranch]:
    """Funded accounts low < high, a payee, and a hold of 100 on each (committed): the accounts,
    then the branches of the hold on high and of the one on low."""
    low, high = sorted([await ledger.open("first"), await ledger.open("second")])
    payee = await ledger.open("payee")
    for account in (low, high):
        await ledger.fund(account, FUNDS)
    on_high, on_low = _branch("high"), _branch("low")
    await h.reserve_holds(
        [
            c.ReserveHold(on_high, high, payee, 100, "USD"),
            c.ReserveHold(on_low, low, payee, 100, "USD"),
        ],
        deps,
    )
    return low, high, payee, on_high, on_low


async def test_a_batch_confirming_and_cancelling_locks_its_accounts_in_id_order(
    ledger, uow, clock, sessions, deps
):
    """ResolveHolds that confirms a hold on `high` and cancels one on `low` posts twice (the
    Confirms, then the releases): locked by each posting, `low` was taken after `high`."""
    low, high, payee, confirmed, cancelled = await _holds_on_low_and_high(ledger, deps)
    batch = c.ResolveHolds((c.ConfirmHold(confirmed), c.CancelHold(cancelled)))
    outcomes, attempts = await _race_with_a_group_on_low_and_high(
        ledger, uow, clock, sessions, low, high, lambda d: h.resolve_holds(batch, d)
    )
    assert [o.error for o in outcomes] == [None, None]
    assert attempts == {"group1": 1, "group2": 1}
    assert await ledger.balances(low, high, payee) == [
        (FUNDS, 1),
        (FUNDS - 100, 1),
        (100, 0),
    ]


async def test_a_confirm_repeated_after_its_refusal_locks_no_account_out_of_order(
    ledger, uow, clock, sessions, deps
):
    """A group of Confirms: one of a hold on `high`, one of a hold on `low` refused (more than
    it holds) and repeated (a twin, next round) as it may be: the repeat posts in the second
    round, and `low` was taken after `high`."""
    low, high, payee, on_high, on_low = await _holds_on_low_and_high(ledger, deps)
    group = [c.ConfirmHold(on_high), c.ConfirmHold(on_low, 101), c.ConfirmHold(on_low)]
    outcomes, attempts = await _race_with_a_group_on_low_and_high(
        ledger, uow, clock, sessions, low, high, lambda d: h.confirm_holds(group, d)
    )
    assert [o.error.reason if o.error else "new" for o in outcomes] == [
        "new",
        "VALIDATION_FAILED",
        "new",
    ]
    assert attempts == {"group1": 1, "group2": 1}
    assert await ledger.balances(low, high, payee) == [
        (FUNDS - 100, 1),
        (FUNDS - 100, 1),
        (200, 0),
    ]
