"""The lock order of grouped Confirms, Cancels and Trys that cross on real PostgreSQL (issue 13,
two shapes left by the tenth round, and a third found with them).

(a) A ResolveHolds round locked its Cancels' holds (one statement), then its Confirms' (the next):
two batches resolving the same two holds the opposite ways (one confirms A and cancels B, the other
cancels A and confirms B) each held one hold and waited for the other. A round now locks every hold
it resolves in one statement, in key order.

(b) A Cancel in a later round of a batch (after a Confirm of its branch, refused: no hold yet)
wrote its branch's Try barrier row only then, while the batch held the account rows of its first
round; the branch's Try in flight elsewhere (a group of Reserves that had written that row and
waited for one of those accounts) and the batch each waited for the other. A batch now writes the
Try rows of all its Cancels in its first statement, before it holds anything (a Cancel before its
Try stays a null compensation, and the Confirm before it is still answered HOLD_NOT_FOUND).

(c) Barrier rows were inserted in the order of a group's calls: a group of Reserves and a batch
cancelling the same branches listed the other way round (a Cancel before its Try, both in flight)
each inserted one branch's Try row and waited for the other's. Every group now inserts its barrier
rows in key order.

Each test checks PostgreSQL's own deadlock count, that no group ran twice, every call's outcome,
and the balances and hold states."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from sqlalchemy import text

from hirepay_platform.tcc import TccBranch
from tests.wallet.integration.conftest import barrier_rows
from tests.wallet.integration.lock_races import (
    blocked_by,
    counting_uow,
    deadlocks,
    hold_account,
    hold_states,
    reasons,
)
from wallet.domain import commands as c
from wallet.service_layer import handlers as h
from wallet.service_layer.deps import Deps

pytestmark = pytest.mark.usefixtures("sound")

FUNDS = 1_000_000


def _branch(tag: str) -> TccBranch:
    return TccBranch(f"x-{tag}-{uuid.uuid4().hex[:10]}", "payment")


async def test_two_batches_resolving_two_holds_the_opposite_ways_do_not_deadlock(
    ledger, uow, clock, sessions, deps
):
    """Shape (a). X confirms A and cancels B; Y cancels A and confirms B. X is stopped after it
    locked B's hold, at B's Cancel barrier row (a test transaction has inserted that row and not
    committed); Y then locks A (its Cancel's hold) and waits for B. The row given back, X went on
    to lock A (its Confirm's hold): before the fix a deadlock, PostgreSQL aborting one and its
    batch run again. Now X locks both holds in one statement, Y waits for X, and each runs once:
    X confirms A and cancels B, Y is refused both (HOLD_ALREADY_RESOLVED)."""
    payer_a = await ledger.open("payer-a")
    payer_b = await ledger.open("payer-b")
    payee = await ledger.open("payee")
    for account in (payer_a, payer_b):
        await ledger.fund(account, FUNDS)
    on_a, on_b = _branch("a"), _branch("b")
    reserved = await h.reserve_holds(
        [
            c.ReserveHold(on_a, payer_a, payee, 100, "USD"),
            c.ReserveHold(on_b, payer_b, payee, 30, "USD"),
        ],
        deps,
    )
    assert reasons(reserved) == ["ok", "ok"]
    attempts: Counter[str] = Counter()
    before = await deadlocks(sessions)

    def deps_of(name: str) -> Deps:
        return Deps(uow=counting_uow(uow, attempts, name), clock=clock)

    batch_x = c.ResolveHolds((c.ConfirmHold(on_a), c.CancelHold(on_b, "x")))
    batch_y = c.ResolveHolds((c.CancelHold(on_a, "y"), c.ConfirmHold(on_b)))
    async with sessions() as holder:
        held = await holder.execute(
            text(
                "INSERT INTO tcc_barriers (global_tx_id, branch_id, op, origin)"
                " VALUES (:g, :b, 'cancel', 'cancel') RETURNING pg_backend_pid()"
            ),
            {"g": on_b.global_tx_id, "b": on_b.branch_id},
        )
        blocker = held.scalar_one()
        first = asyncio.create_task(h.resolve_holds(batch_x, deps_of("X")))
        waiting = await blocked_by(sessions, {blocker}, set())  # X, holding B, for its row
        second = asyncio.create_task(h.resolve_holds(batch_y, deps_of("Y")))
        await blocked_by(sessions, {waiting}, {waiting})  # Y, for a hold X holds
        await holder.rollback()  # the row given back: X goes on
        outcomes_x, outcomes_y = await asyncio.gather(first, second)
    assert reasons(outcomes_x) == ["ok", "ok"]
    assert not any(o.result.replayed for o in outcomes_x)
    assert reasons(outcomes_y) == ["HOLD_ALREADY_RESOLVED", "HOLD_ALREADY_RESOLVED"]
    assert await deadlocks(sessions) == before  # PostgreSQL detected no deadlock
    assert attempts == {"X": 1, "Y": 1}  # neither batch ran twice
    assert await hold_states(sessions, on_a, on_b) == ["confirmed", "cancelled"]
    assert await ledger.balances(payer_a, payer_b, payee) == [
        (FUNDS - 100, 0),
        (FUNDS, 0),
        (100, 0),
    ]
    # Y's refused Cancel and Confirm left no barrier row behind.
    assert await barrier_rows(sessions, on_a) == ["confirm", "try"]
    assert await barrier_rows(sessions, on_b) == ["cancel", "try"]


async def test_a_later_round_cancel_and_its_try_in_flight_elsewhere_do_not_deadlock(
    ledger, uow, clock, sessions, deps
):
    """Shape (b). Y, a group of Reserves (T on `high`, U on `low`, low < high), inserts both Try
    barrier rows and waits for `low` (a test transaction holds its row). X, a ResolveHolds,
    confirms T (no hold yet: refused), confirms Q (a hold on `high`: X locks `high`) and cancels
    T (T's second call, a later round). `low` freed, Y waited for `high`, held by X, and before the
    fix X's Cancel inserted T's Try row only in its second round and waited for Y's: a deadlock.
    Now X inserts that row first, before any lock, and so waits for Y at once; Y reserves and
    commits, and X, each running once, finds T's hold: it confirms T and Q and its Cancel of T is
    refused (HOLD_ALREADY_RESOLVED) - the order Y, then X's calls in theirs."""
    low, high = sorted([await ledger.open("first"), await ledger.open("second")])
    payee = await ledger.open("payee")
    for account in (low, high):
        await ledger.fund(account, FUNDS)
    t, u, q = _branch("t"), _branch("u"), _branch("q")
    reserved = await h.reserve_holds([c.ReserveHold(q, high, payee, 10, "USD")], deps)
    assert reasons(reserved) == ["ok"]
    attempts: Counter[str] = Counter()
    before = await deadlocks(sessions)

    def deps_of(name: str) -> Deps:
        return Deps(uow=counting_uow(uow, attempts, name), clock=clock)

    group_y = [c.ReserveHold(t, high, payee, 100, "USD"), c.ReserveHold(u, low, payee, 5, "USD")]
    batch_x = c.ResolveHolds((c.ConfirmHold(t), c.ConfirmHold(q), c.CancelHold(t, "x")))
    async with sessions() as holder:
        blocker = await hold_account(holder, low)
        first = asyncio.create_task(h.reserve_holds(group_y, deps_of("Y")))
        waiting = await blocked_by(sessions, {blocker}, set())  # Y, T's row written, for `low`
        second = asyncio.create_task(h.resolve_holds(batch_x, deps_of("X")))
        await blocked_by(sessions, {waiting}, {waiting})  # X, for T's Try row
        await holder.commit()
        outcomes_y, outcomes_x = await asyncio.gather(first, second)
    assert reasons(outcomes_y) == ["ok", "ok"]
    assert reasons(outcomes_x) == ["ok", "ok", "HOLD_ALREADY_RESOLVED"]
    assert await deadlocks(sessions) == before  # PostgreSQL detected no deadlock
    assert attempts == {"X": 1, "Y": 1}  # neither ran twice
    assert await hold_states(sessions, t, u, q) == ["confirmed", "pending", "confirmed"]
    assert await ledger.balances(low, high, payee) == [
        (FUNDS, 5),
        (FUNDS - 110, 0),
        (110, 0),
    ]
    assert await barrier_rows(sessions, t) == ["confirm", "try"]  # the refused Cancel: none


async def test_a_cancel_after_a_refused_confirm_of_an_untried_branch_keeps_its_answers(
    ledger, sessions, deps
):
    """What (b)'s fix must not change: in one batch, Confirms of a branch never tried, then its
    Cancel, then a Confirm again, answered as those calls one after the other: HOLD_NOT_FOUND
    twice (no Try and no Cancel yet, though the batch wrote the Try row up front), the Cancel a
    null compensation, then HOLD_CANCELLED; a late Try refuses (hanging), nothing is reserved."""
    payer = await ledger.open("payer")
    payee = await ledger.open("payee")
    await ledger.fund(payer, FUNDS)
    t, q = _branch("t"), _branch("q")
    await h.reserve_holds([c.ReserveHold(q, payer, payee, 10, "USD")], deps)
    batch = c.ResolveHolds(
        (
            c.ConfirmHold(t),
            c.ConfirmHold(q),
            c.ConfirmHold(t),
            c.CancelHold(t, "first"),
            c.ConfirmHold(t),
            c.CancelHold(t, "again"),
        )
    )
    outcomes = await h.resolve_holds(batch, deps)
    assert reasons(outcomes) == [
        "HOLD_NOT_FOUND",
        "ok",
        "HOLD_NOT_FOUND",
        "ok",
        "HOLD_CANCELLED",
        "ok",
    ]
    assert outcomes[3].result.null_compensation and not outcomes[3].result.replayed
    assert outcomes[5].result.null_compensation and outcomes[5].result.replayed
    late = await h.reserve_holds([c.ReserveHold(t, payer, payee, 1, "USD")], deps)
    assert reasons(late) == ["HOLD_CANCELLED"]
    assert await hold_states(sessions, t, q) == [None, "confirmed"]
    assert await barrier_rows(sessions, t) == ["cancel", "try"]
    assert await ledger.balances(payer, payee) == [(FUNDS - 10, 0), (10, 0)]


ITERATIONS = 30


async def test_crossed_groups_on_every_path_never_deadlock(ledger, uow, clock, sessions):
    """Unarranged: each iteration sends at once two ResolveHolds batches resolving two holds the
    opposite ways (shape a), and a group of Reserves of two new branches with a batch cancelling
    them listed the other way round (shape c: Cancel before Try, in flight together). No deadlock
    is detected, no group runs twice, each hold is resolved once, and the balances are exact."""
    low, high = sorted([await ledger.open("low"), await ledger.open("high")])
    payee = await ledger.open("payee")
    for payer in (low, high):
        await ledger.fund(payer, FUNDS)
    attempts: Counter[str] = Counter()
    deps = Deps(uow=counting_uow(uow, attempts, "group"), clock=clock)
    before = await deadlocks(sessions)
    confirmed = 0
    for n in range(ITERATIONS):
        a, b, s, t = (_branch(f"{tag}{n}") for tag in "abst")
        await h.reserve_holds(
            [c.ReserveHold(a, low, payee, 10, "USD"), c.ReserveHold(b, high, payee, 10, "USD")],
            deps,
        )
        x, y, tried, cancelled = await asyncio.gather(
            h.resolve_holds(c.ResolveHolds((c.ConfirmHold(a), c.CancelHold(b, "x"))), deps),
            h.resolve_holds(c.ResolveHolds((c.CancelHold(a, "y"), c.ConfirmHold(b))), deps),
            h.reserve_holds(
                [c.ReserveHold(s, low, payee, 1, "USD"), c.ReserveHold(t, high, payee, 1, "USD")],
                deps,
            ),
            h.resolve_holds(c.ResolveHolds((c.CancelHold(t, "c"), c.CancelHold(s, "c"))), deps),
        )
        # Each hold resolved once: by one batch's call, the other's refused.
        for i in range(2):
            assert sorted([reasons(x)[i], reasons(y)[i]]) == ["HOLD_ALREADY_RESOLVED", "ok"]
        states = await hold_states(sessions, a, b, s, t)
        assert states[0] in ("confirmed", "cancelled") and states[1] in ("confirmed", "cancelled")
        confirmed += (states[0] == "confirmed") + (states[1] == "confirmed")
        # Try and Cancel of s and t: either order, per branch, but each branch ends cancelled or
        # never reserved (the Cancel first: the Try refused as hanging).
        assert reasons(cancelled) == ["ok", "ok"]
        for k, state in ((0, states[2]), (1, states[3])):
            assert reasons(tried)[k] == ("ok" if state == "cancelled" else "HOLD_CANCELLED")
    assert await deadlocks(sessions) == before  # PostgreSQL detected no deadlock
    assert attempts["group"] == ITERATIONS * 5  # no group ran twice
    on_low, on_high, on_payee = [await ledger.balance(a) for a in (low, high, payee)]
    assert (on_low.pending, on_high.pending) == (0, 0)
    assert on_low.posted + on_high.posted == 2 * FUNDS - 10 * confirmed
    assert (on_payee.posted, on_payee.pending) == (10 * confirmed, 0)


BRANCHES = 20


async def test_trys_and_cancels_of_the_same_branches_in_opposite_orders_never_deadlock(
    ledger, uow, clock, sessions
):
    """Shape (c), unarranged: each iteration sends at once a group of 20 Reserves (CreateHolds)
    and a ResolveHolds cancelling the same 20 branches listed the other way round (a coordinator
    giving up on Trys still in flight). Each inserts every branch's Try barrier row; in the calls'
    orders, the two met in the middle, each waiting for the other's row. No deadlock is detected,
    no group runs twice, and each branch ends either reserved and cancelled (the Try first) or
    never reserved (the Cancel first, the Try refused as hanging): nothing stays pending."""
    payer = await ledger.open("payer")
    payee = await ledger.open("payee")
    await ledger.fund(payer, FUNDS)
    attempts: Counter[str] = Counter()
    deps = Deps(uow=counting_uow(uow, attempts, "group"), clock=clock)
    before = await deadlocks(sessions)
    for n in range(ITERATIONS // 3):
        branches = [_branch(f"{n}-{k}") for k in range(BRANCHES)]
        reserves = [c.ReserveHold(b, payer, payee, 1, "USD") for b in branches]
        cancels = c.ResolveHolds(tuple(c.CancelHold(b, "gave up") for b in reversed(branches)))
        tried, cancelled = await asyncio.gather(
            h.create_holds(c.CreateHolds(tuple(reserves)), deps), h.resolve_holds(cancels, deps)
        )
        assert reasons(cancelled) == ["ok"] * BRANCHES
        states = await hold_states(sessions, *branches)
        for k, state in enumerate(states):
            assert state in ("cancelled", None)
            assert reasons(tried)[k] == ("ok" if state == "cancelled" else "HOLD_CANCELLED")
            null = cancelled[BRANCHES - 1 - k].result.null_compensation
            assert null == (state is None)
    assert await deadlocks(sessions) == before  # PostgreSQL detected no deadlock
    assert attempts["group"] == 2 * (ITERATIONS // 3)  # no group ran twice
    assert await ledger.balances(payer, payee) == [(FUNDS, 0), (0, 0)]


async def test_a_try_and_a_cancel_inserting_rows_in_opposite_orders_do_not_deadlock(
    ledger, uow, clock, sessions
):
    """Shape (c), arranged: branches s < t < u (key order). A test transaction has inserted u's
    Try row (not committed). Y, a group of Reserves of s, u and t (in that order), inserts s's row
    and waits for u's; X, a ResolveHolds cancelling t then s, inserted t's row and waited for s's
    (Y's). The row given back, Y went on to t's, X's: before the fix a deadlock. Now both insert
    in key order: Y inserts s's and t's rows before it waits for u's, X waits for Y at s's, holding
    nothing. Each runs once: Y reserves all three, X then cancels s and t (their Trys first)."""
    payer = await ledger.open("payer")
    payee = await ledger.open("payee")
    await ledger.fund(payer, FUNDS)
    tx = f"x-{uuid.uuid4().hex[:10]}"
    s, t, u = (TccBranch(f"{tx}-{k}", "payment") for k in ("1s", "2t", "3u"))
    attempts: Counter[str] = Counter()
    before = await deadlocks(sessions)

    def deps_of(name: str) -> Deps:
        return Deps(uow=counting_uow(uow, attempts, name), clock=clock)

    group_y = [
        c.ReserveHold(s, payer, payee, 1, "USD"),
        c.ReserveHold(u, payer, payee, 2, "USD"),
        c.ReserveHold(t, payer, payee, 4, "USD"),
    ]
    batch_x = c.ResolveHolds((c.CancelHold(t, "x"), c.CancelHold(s, "x")))
    async with sessions() as holder:
        held = await holder.execute(
            text(
                "INSERT INTO tcc_barriers (global_tx_id, branch_id, op, origin)"
                " VALUES (:g, :b, 'try', 'try') RETURNING pg_backend_pid()"
            ),
            {"g": u.global_tx_id, "b": u.branch_id},
        )
        blocker = held.scalar_one()
        first = asyncio.create_task(h.reserve_holds(group_y, deps_of("Y")))
        waiting = await blocked_by(sessions, {blocker}, set())  # Y, for u's row
        second = asyncio.create_task(h.resolve_holds(batch_x, deps_of("X")))
        await blocked_by(sessions, {waiting}, {waiting})  # X, for s's row (Y's)
        await holder.rollback()
        outcomes_y, outcomes_x = await asyncio.gather(first, second)
    assert await deadlocks(sessions) == before  # PostgreSQL detected no deadlock
    assert attempts == {"X": 1, "Y": 1}  # neither ran twice
    assert reasons(outcomes_y) == ["ok", "ok", "ok"]
    assert reasons(outcomes_x) == ["ok", "ok"]
    assert not any(o.result.null_compensation or o.result.replayed for o in outcomes_x)
    assert await hold_states(sessions, s, t, u) == ["cancelled", "cancelled", "pending"]
    assert await ledger.balances(payer, payee) == [(FUNDS, 2), (0, 0)]
