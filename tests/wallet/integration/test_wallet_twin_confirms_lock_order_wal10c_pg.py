"""Twin Confirms (the same hold) in two groups at once, one on the one-statement path and one
checked, on real PostgreSQL (issue 13, gap (c) left by aac2445). The one statement locks the hold,
then the account rows, and inserts its barrier row last (only if everything applies); the checked
path inserted its barrier row first and then locked the hold. Twins meeting in between each waited
for the other (the hold's lock / the in-flight barrier row): a deadlock, PostgreSQL aborting one
after deadlock_timeout and its group run again. The checked path now locks the holds before it
inserts the barrier rows, as the one statement does: the later twin waits for the hold and then
finds the first's barrier row (a replay), and no group runs twice. Gap (b), the same with Cancels:
a group's Cancel in a later round (after a refused Confirm of its hold, which stays locked) and a
twin Cancel elsewhere that inserted its row first and waited for the hold; Cancels (grouped and
single) now lock the hold before their own barrier row too. Gap (a): a Reserve repeated after
its first call was refused by the account check inserted its barrier row in a later round, while
its group held account rows, and a twin that had inserted that row first waited for one of them;
the refused calls are now answered before the rounds are made."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest

from hirepay_platform.tcc import TccBranch
from tests.wallet.integration.lock_races import blocked_by, counting_uow, deadlocks, hold_account
from wallet.domain import commands as c
from wallet.service_layer import handlers as h
from wallet.service_layer.deps import Deps
from wallet.service_layer.handlers.batches import BatchOutcome

pytestmark = pytest.mark.usefixtures("sound")

FUNDS = 1_000_000


@pytest.mark.parametrize("twin_shape", ["repeated", "resolve_with_cancel", "single"])
async def test_twin_confirms_one_statement_and_checked_do_not_deadlock(
    ledger, uow, clock, sessions, deps, twin_shape
):
    """Group A confirms hold H on the one-statement path (this process reserved it): it locks H,
    then waits for the payer's row (a test transaction holds it). Group B, a twin of H on the
    checked path (a Confirm repeated in its group, or a ResolveHolds that also cancels another
    hold - as another replica would, not remembering H), is started and waits for A. The payer's
    row freed, A inserts its barrier row: before the fix B had inserted its own first and waited
    for H, a deadlock. Now each group runs once, A posts, B replays, the balances are exact."""
    payer = await ledger.open("payer")
    payee = await ledger.open("payee")
    await ledger.fund(payer, FUNDS)
    twin = TccBranch(f"twin-{uuid.uuid4().hex[:10]}", "payment")
    other = TccBranch(f"other-{uuid.uuid4().hex[:10]}", "payment")
    reserved = await h.reserve_holds(
        [
            c.ReserveHold(twin, payer, payee, 100, "USD"),
            c.ReserveHold(other, payer, payee, 5, "USD"),
        ],
        deps,
    )
    assert [o.error for o in reserved] == [None, None]
    attempts: Counter[str] = Counter()
    before = await deadlocks(sessions)

    def deps_of(name: str) -> Deps:
        return Deps(uow=counting_uow(uow, attempts, name), clock=clock)

    if twin_shape == "repeated":
        group_b = lambda d: h.confirm_holds([c.ConfirmHold(twin), c.ConfirmHold(twin)], d)  # noqa: E731
    elif twin_shape == "single":  # the ungrouped handler

        async def group_b(d: Deps) -> list:
            return [BatchOutcome(result=await h.confirm_hold(c.ConfirmHold(twin), d))]

    else:
        batch = c.ResolveHolds((c.ConfirmHold(twin), c.CancelHold(other)))
        group_b = lambda d: h.resolve_holds(batch, d)  # noqa: E731
    async with sessions() as holder:
        blocker = await hold_account(holder, payer)
        first = asyncio.create_task(h.confirm_holds([c.ConfirmHold(twin)], deps_of("A")))
        waiting = await blocked_by(sessions, {blocker}, set())  # A, holding H, for the payer
        second = asyncio.create_task(group_b(deps_of("B")))
        await blocked_by(sessions, {waiting}, {waiting})  # B, for H (or its barrier row)
        await holder.commit()
        outcomes_a, outcomes_b = await asyncio.gather(first, second)
    assert [o.error for o in outcomes_a] == [None]
    assert not outcomes_a[0].result.replayed
    assert all(o.error is None for o in outcomes_b), [o.error for o in outcomes_b]
    assert outcomes_b[0].result.replayed
    assert await deadlocks(sessions) == before  # PostgreSQL detected no deadlock
    assert attempts == {"A": 1, "B": 1}  # no group ran twice
    cancelled = 5 if twin_shape == "resolve_with_cancel" else 0
    assert await ledger.balances(payer, payee) == [(FUNDS - 100, 5 - cancelled), (100, 0)]


@pytest.mark.parametrize("twin_shape", ["batch", "single"])
async def test_a_later_round_cancel_and_its_twin_elsewhere_do_not_deadlock(
    ledger, uow, clock, sessions, deps, twin_shape
):
    """Gap (b): group X (ResolveHolds) confirms hold H with more than it holds (refused: H stays
    locked) and a hold H2 on another payer, then cancels H (a later round of H's branch). X is
    made to wait for H2's payer (a test transaction holds it) while it holds H; a twin Cancel of
    H (a ResolveHolds, or a single CancelHold, elsewhere) starts and waits for X. Freed, X reaches
    its Cancel's barrier row: before the fix the twin had inserted that row first and waited for
    H, a deadlock. Now each runs once: X cancels, the twin replays, the balances are exact."""
    payer, payer2 = sorted([await ledger.open("payer"), await ledger.open("payer2")])
    payee = await ledger.open("payee")
    for account in (payer, payer2):
        await ledger.fund(account, FUNDS)
    on_h = TccBranch(f"h-{uuid.uuid4().hex[:10]}", "payment")
    on_h2 = TccBranch(f"h2-{uuid.uuid4().hex[:10]}", "payment")
    reserved = await h.reserve_holds(
        [
            c.ReserveHold(on_h, payer, payee, 100, "USD"),
            c.ReserveHold(on_h2, payer2, payee, 7, "USD"),
        ],
        deps,
    )
    assert [o.error for o in reserved] == [None, None]
    attempts: Counter[str] = Counter()
    before = await deadlocks(sessions)

    def deps_of(name: str) -> Deps:
        return Deps(uow=counting_uow(uow, attempts, name), clock=clock)

    group_x = c.ResolveHolds(
        (c.ConfirmHold(on_h, 101), c.ConfirmHold(on_h2), c.CancelHold(on_h, "twice"))
    )
    if twin_shape == "batch":
        twin = lambda d: h.resolve_holds(c.ResolveHolds((c.CancelHold(on_h, "twin"),)), d)  # noqa: E731
    else:

        async def twin(d: Deps) -> list:
            return [BatchOutcome(result=await h.cancel_hold(c.CancelHold(on_h, "twin"), d))]

    async with sessions() as holder:
        blocker = await hold_account(holder, payer2)
        first = asyncio.create_task(h.resolve_holds(group_x, deps_of("X")))
        waiting = await blocked_by(sessions, {blocker}, set())  # X, holding H, for payer2
        second = asyncio.create_task(twin(deps_of("Y")))
        await blocked_by(sessions, {waiting}, {waiting})  # the twin, for H (or its row)
        await holder.commit()
        outcomes_x, outcomes_y = await asyncio.gather(first, second)
    assert [o.error.reason if o.error else "ok" for o in outcomes_x] == [
        "VALIDATION_FAILED",
        "ok",
        "ok",
    ]
    assert not outcomes_x[2].result.replayed
    assert [o.error for o in outcomes_y] == [None]
    assert outcomes_y[0].result.replayed
    assert await deadlocks(sessions) == before  # PostgreSQL detected no deadlock
    assert attempts == {"X": 1, "Y": 1}  # neither ran twice
    assert await ledger.balances(payer, payer2, payee) == [
        (FUNDS, 0),
        (FUNDS - 7, 0),
        (7, 0),
    ]


async def test_a_repeated_reserve_after_an_account_refusal_and_its_twin_do_not_deadlock(
    ledger, uow, clock, sessions
):
    """Gap (a): group X reserves branch T in the wrong unit (refused by the account check: no
    barrier row), another hold O on the payer, and T again, right (a repeat: a later round). X is
    made to wait for the payer's row (a test transaction holds it); a twin Reserve of T (another
    group, on the one-statement path) starts and waits after it. Freed, X took the payer's row in
    its first round and inserted T's barrier row only in its second: before the fix the twin had
    inserted that row first and waited for the payer, a deadlock. Now a Reserve refused by the
    account check is answered before the rounds are made, T's repeat is in the first round with
    its barrier row before the accounts, and each group runs once: X reserves T, the twin replays."""
    payer = await ledger.open("payer")
    payee = await ledger.open("payee")
    await ledger.fund(payer, FUNDS)
    t = TccBranch(f"t-{uuid.uuid4().hex[:10]}", "payment")
    o = TccBranch(f"o-{uuid.uuid4().hex[:10]}", "payment")
    attempts: Counter[str] = Counter()
    before = await deadlocks(sessions)

    def deps_of(name: str) -> Deps:
        return Deps(uow=counting_uow(uow, attempts, name), clock=clock)

    group_x = [
        c.ReserveHold(t, payer, payee, 100, "EUR"),  # refused: the accounts are in USD
        c.ReserveHold(o, payer, payee, 1, "USD"),
        c.ReserveHold(t, payer, payee, 100, "USD"),
    ]
    async with sessions() as holder:
        blocker = await hold_account(holder, payer)
        first = asyncio.create_task(h.reserve_holds(group_x, deps_of("X")))
        waiting = await blocked_by(sessions, {blocker}, set())  # X, for the payer
        twin = [c.ReserveHold(t, payer, payee, 100, "USD")]
        second = asyncio.create_task(h.reserve_holds(twin, deps_of("Y")))
        await blocked_by(sessions, {blocker, waiting}, {waiting})  # the twin, after X
        await holder.commit()
        outcomes_x, outcomes_y = await asyncio.gather(first, second)
    assert outcomes_x[0].error is not None
    assert [o.error for o in outcomes_x[1:]] == [None, None]
    assert not outcomes_x[2].result.replayed
    assert [o.error for o in outcomes_y] == [None]
    assert outcomes_y[0].result.replayed
    assert await deadlocks(sessions) == before  # PostgreSQL detected no deadlock
    assert attempts == {"X": 1, "Y": 1}  # neither ran twice
    assert await ledger.balances(payer, payee) == [(FUNDS, 101), (0, 0)]


ITERATIONS = 40


async def test_twins_on_every_path_at_once_never_deadlock(ledger, uow, clock, sessions):
    """Unarranged: each iteration sends, all at once, a one-statement Confirm of a hold and a
    checked twin (a Confirm repeated in its group); a ResolveHolds refusing a Confirm of another
    hold and then cancelling it, and a single CancelHold twin; a group of Reserves whose branch
    is refused by the account check then repeated, and a twin Reserve. No deadlock is detected, no
    group runs twice, each branch is applied once (the twins replay) and the balances are exact."""
    low, high = sorted([await ledger.open("low"), await ledger.open("high")])
    payee = await ledger.open("payee")
    for payer in (low, high):
        await ledger.fund(payer, FUNDS)
    attempts: Counter[str] = Counter()
    deps = Deps(uow=counting_uow(uow, attempts, "group"), clock=clock)
    before = await deadlocks(sessions)
    for n in range(ITERATIONS):
        confirmed, cancelled, tried, other = (
            TccBranch(f"{tag}{n}-{uuid.uuid4().hex[:8]}", "payment") for tag in "xyto"
        )
        await h.reserve_holds(
            [
                c.ReserveHold(confirmed, low, payee, 10, "USD"),
                c.ReserveHold(cancelled, high, payee, 10, "USD"),
            ],
            deps,
        )
        resolve = c.ResolveHolds((c.ConfirmHold(cancelled, 11), c.CancelHold(cancelled, "x")))
        reserves = [
            c.ReserveHold(tried, low, payee, 1, "EUR"),
            c.ReserveHold(other, high, payee, 1, "USD"),
            c.ReserveHold(tried, low, payee, 1, "USD"),
        ]
        one, two, resolved, single, group, twin = await asyncio.gather(
            h.confirm_holds([c.ConfirmHold(confirmed)], deps),
            h.confirm_holds([c.ConfirmHold(confirmed), c.ConfirmHold(confirmed)], deps),
            h.resolve_holds(resolve, deps),
            h.cancel_hold(c.CancelHold(cancelled, "y"), deps),
            h.reserve_holds(reserves, deps),
            h.reserve_holds([c.ReserveHold(tried, low, payee, 1, "USD")], deps),
        )
        confirms = [*one, *two]
        assert all(o.error is None for o in confirms)
        assert sum(not o.result.replayed for o in confirms) == 1
        assert resolved[0].error is not None and resolved[1].error is None
        assert [resolved[1].result.replayed, single.replayed].count(False) == 1
        assert group[0].error is not None
        assert all(o.error is None for o in [*group[1:], *twin])
        assert [group[2].result.replayed, twin[0].result.replayed].count(False) == 1
    assert await deadlocks(sessions) == before  # PostgreSQL detected no deadlock
    assert attempts["group"] == ITERATIONS * 7  # no group ran twice
    assert await ledger.balances(low, high, payee) == [
        (FUNDS - 10 * ITERATIONS, ITERATIONS),  # the holds confirmed; each tried one (1) pending
        (FUNDS, ITERATIONS),  # the holds cancelled, released; each other one (1) pending
        (10 * ITERATIONS, 0),
    ]
