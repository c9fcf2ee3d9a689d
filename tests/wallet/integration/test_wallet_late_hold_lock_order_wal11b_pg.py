"""A Confirm repeated in a later round of one group whose Try commits between the rounds, on real
PostgreSQL (issue 13, the shape round 11's first helper left unreproduced).

A coordinator that confirms before its Try was answered, twice in one group (ResolveHolds
(Confirm T, ..., Confirm T), or twin ConfirmHold calls grouped): the first round finds no hold
(HOLD_NOT_FOUND: the Try has not committed), its other Confirms post (their account rows locked),
then the Try commits, and the later round found T's hold. Locking it and its accounts then, the
group took rows no earlier round knew of after rows that may sort after them, and waited for them:

- a group locking T's payer and an account of the first round in id order (a transfer) held the
  payer and waited for the group's account: a deadlock;
- a twin Confirm of T elsewhere (a single ConfirmHold) held T's hold and waited for T's Confirm
  barrier row, which the group had inserted (and given back, uncommitted) in its first round: a
  deadlock.

PostgreSQL aborted one after deadlock_timeout. A later round now locks only the holds its group's
earlier rounds locked; a hold that appeared since is looked at without a lock, and if there is one
the group's transaction is given up and run again at once (rolled back: nothing committed, no lock
kept): its first round finds the hold and locks it with the others in the one order. So the group
confirms T in its first round and replays the repeat, as it would have had the Try committed
before it started; a Confirm whose hold is still missing is answered HOLD_NOT_FOUND, as before.

The same holds for a single ConfirmHold or CancelHold that found no hold and then, behind its
barrier row, finds one (it runs again), and for the revenue shard a later round's fee credits
(picked by its Confirm's transfer id in round 11, locked up front with the group's account rows;
now the group's one shard, which its first round took).

Each test checks PostgreSQL's own deadlock count, how often each group ran, every call's outcome,
and the balances, hold states and barrier rows."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from sqlalchemy import text

from hirepay_platform.tcc import TccBranch
from tests.wallet.integration.conftest import barrier_rows, warm_refs
from tests.wallet.integration.lock_races import (
    blocked_by,
    counting_uow,
    deadlocks,
    hold_account,
    hold_states,
    reasons,
)
from wallet.domain import commands as c
from wallet.domain.ledger import Leg
from wallet.domain.model import AccountKind, shard_for
from wallet.domain.splits import Share
from wallet.service_layer import handlers as h
from wallet.service_layer.deps import Deps
from wallet.service_layer.handlers import grouped_holds
from wallet.service_layer.handlers.batches import BatchOutcome

pytestmark = pytest.mark.usefixtures("sound")

FUNDS = 1_000_000
MOVED = 7  # what the racing transfer moves from T's payer to the first round's payer


def _branch(tag: str) -> TccBranch:
    return TccBranch(f"lh-{tag}-{uuid.uuid4().hex[:10]}", "payment")


@pytest.mark.parametrize("group_shape", ["batch", "grouped"])
@pytest.mark.parametrize("rival", ["transfer", "twin_confirm"])
async def test_a_hold_tried_between_a_groups_rounds_takes_no_lock_out_of_order(
    ledger, uow, clock, sessions, deps, group_shape, rival
):
    """Accounts `low` < `high`. Hold Q (10) on `high`, committed. Group X confirms Q, then T,
    then T again (a later round). X is made to wait, in its first round, for `high` (a test
    transaction holds it): T's Confirm found no hold. Then T's Try (100 on `low`) commits, and the
    rival starts and waits: a transfer from `low` to `high` (it takes `low`, then waits for
    `high`), or a single ConfirmHold of T (it takes T's hold, then waits for T's Confirm barrier
    row, X's). `high` freed, X posted Q and in its later round took T's hold and `low`: before the
    fix a deadlock, one of them aborted. Now X finds T's hold without locking it, gives up its
    transaction, and runs again (twice in all: no deadlock): the rival goes first; X confirms Q,
    then T (or, after the twin, replays it) and replays the repeat."""
    low, high = sorted([await ledger.open("low"), await ledger.open("high")])
    payee = await ledger.open("payee")
    for account in (low, high):
        await ledger.fund(account, FUNDS)
    q, t = _branch("q"), _branch("t")
    reserved = await h.reserve_holds([c.ReserveHold(q, high, payee, 10, "USD")], deps)
    assert reasons(reserved) == ["ok"]
    attempts: Counter[str] = Counter()
    before = await deadlocks(sessions)

    def deps_of(name: str) -> Deps:
        return Deps(uow=counting_uow(uow, attempts, name), clock=clock)

    confirms = (c.ConfirmHold(q), c.ConfirmHold(t), c.ConfirmHold(t))
    if group_shape == "batch":
        group_x = lambda d: h.resolve_holds(c.ResolveHolds(confirms), d)  # noqa: E731
    else:
        group_x = lambda d: h.confirm_holds(list(confirms), d)  # noqa: E731
    if rival == "transfer":
        leg = Leg(low, high, MOVED, "USD")
        cmd = c.Transfer(f"lh-{uuid.uuid4().hex}", (leg,))

        async def rival_call(d: Deps) -> list:
            return [BatchOutcome(result=await h.transfer(cmd, d))]

    else:

        async def rival_call(d: Deps) -> list:
            return [BatchOutcome(result=await h.confirm_hold(c.ConfirmHold(t), d))]

    async with sessions() as holder:
        blocker = await hold_account(holder, high)
        first = asyncio.create_task(group_x(deps_of("X")))
        waiting = await blocked_by(sessions, {blocker}, set())  # X, round 1, for `high`
        # T's Try, sent before the Confirms but slower: it commits now (`low` is free).
        tried = await h.reserve_holds([c.ReserveHold(t, low, payee, 100, "USD")], deps)
        assert reasons(tried) == ["ok"]
        second = asyncio.create_task(rival_call(deps_of("Y")))
        # The rival, for `high` (behind X) or for T's Confirm barrier row (X's).
        await blocked_by(sessions, {blocker, waiting}, {waiting})
        await holder.commit()
        outcomes_x, outcomes_y = await asyncio.gather(first, second)
    assert await deadlocks(sessions) == before  # PostgreSQL detected no deadlock
    assert attempts == {"X": 2, "Y": 1}  # X gave its first run up at once; the rival ran once
    assert reasons(outcomes_y) == ["ok"]
    assert not outcomes_y[0].result.replayed
    assert reasons(outcomes_x) == ["ok", "ok", "ok"]
    # T confirmed once: by X's first Confirm of it, or by the twin (X's both replayed).
    assert [o.result.replayed for o in outcomes_x] == [False, rival == "twin_confirm", True]
    assert await hold_states(sessions, q, t) == ["confirmed", "confirmed"]
    assert await barrier_rows(sessions, t) == ["confirm", "try"]
    moved = MOVED if rival == "transfer" else 0
    assert await ledger.balances(low, high, payee) == [
        (FUNDS - 100 - moved, 0),
        (FUNDS - 10 + moved, 0),
        (110, 0),
    ]


async def test_a_repeated_confirm_whose_hold_is_still_missing_keeps_its_answers(
    ledger, uow, clock, sessions, deps
):
    """What the fix must not change: a later round's Confirm of a branch with no hold yet (no
    Try) is answered HOLD_NOT_FOUND as its first call, in the same run (no rerun), and leaves no
    barrier row; a Try after it reserves; a Cancel then releases it."""
    payer = await ledger.open("payer")
    payee = await ledger.open("payee")
    await ledger.fund(payer, FUNDS)
    q, t = _branch("q"), _branch("t")
    await h.reserve_holds([c.ReserveHold(q, payer, payee, 10, "USD")], deps)
    attempts: Counter[str] = Counter()
    counted = Deps(uow=counting_uow(uow, attempts, "X"), clock=clock)
    batch = c.ResolveHolds((c.ConfirmHold(t), c.ConfirmHold(q), c.ConfirmHold(t)))
    outcomes = await h.resolve_holds(batch, counted)
    assert reasons(outcomes) == ["HOLD_NOT_FOUND", "ok", "HOLD_NOT_FOUND"]
    grouped = await h.confirm_holds([c.ConfirmHold(t), c.ConfirmHold(t)], counted)
    assert reasons(grouped) == ["HOLD_NOT_FOUND", "HOLD_NOT_FOUND"]
    assert attempts == {"X": 2}  # one run each
    assert await barrier_rows(sessions, t) == []
    tried = await h.reserve_holds([c.ReserveHold(t, payer, payee, 100, "USD")], deps)
    assert reasons(tried) == ["ok"]
    cancelled = await h.resolve_holds(c.ResolveHolds((c.CancelHold(t, "gave up"),)), deps)
    assert reasons(cancelled) == ["ok"]
    assert await hold_states(sessions, q, t) == ["confirmed", "cancelled"]
    assert await ledger.balances(payer, payee) == [(FUNDS - 10, 0), (10, 0)]


ITERATIONS = 25


async def test_trys_racing_groups_that_confirm_them_twice_never_deadlock(
    ledger, uow, clock, sessions
):
    """Unarranged: each iteration sends at once a Try of T on `low`, a batch confirming Q (on
    `high`) then T twice, a transfer from `low` to `high`, and a single Confirm of T. No deadlock
    is detected, T is confirmed exactly once or not at all (every Confirm before the Try), and
    the balances are exact."""
    low, high = sorted([await ledger.open("low"), await ledger.open("high")])
    payee = await ledger.open("payee")
    for account in (low, high):
        await ledger.fund(account, FUNDS)
    deps = Deps(uow=uow, clock=clock)
    before = await deadlocks(sessions)
    confirmed = 0
    for n in range(ITERATIONS):
        q, t = _branch(f"q{n}"), _branch(f"t{n}")
        await h.reserve_holds([c.ReserveHold(q, high, payee, 10, "USD")], deps)
        cmd = c.Transfer(f"lh-{uuid.uuid4().hex}", (Leg(low, high, MOVED, "USD"),))
        batch = c.ResolveHolds((c.ConfirmHold(q), c.ConfirmHold(t), c.ConfirmHold(t)))
        tried, resolved, moved, single = await asyncio.gather(
            h.reserve_holds([c.ReserveHold(t, low, payee, 100, "USD")], deps),
            h.resolve_holds(batch, deps),
            h.transfer(cmd, deps),
            h.confirm_hold(c.ConfirmHold(t), deps),
            return_exceptions=True,
        )
        assert reasons(tried) == ["ok"]
        assert not isinstance(moved, Exception), moved
        assert reasons(resolved)[0] == "ok"
        t_answers = [*reasons(resolved)[1:], getattr(single, "reason", "ok")]
        assert set(t_answers) <= {"ok", "HOLD_NOT_FOUND"}, t_answers
        state = (await hold_states(sessions, t))[0]
        applied = [not o.result.replayed for o in resolved[1:] if o.error is None]
        if not isinstance(single, Exception):
            applied.append(not single.replayed)
        assert sum(applied) == (state == "confirmed")
        confirmed += state == "confirmed"
    assert await deadlocks(sessions) == before  # PostgreSQL detected no deadlock
    pending = 100 * (ITERATIONS - confirmed)
    assert await ledger.balances(low, high, payee) == [
        (FUNDS - 100 * confirmed - MOVED * ITERATIONS, pending),
        (FUNDS - 10 * ITERATIONS + MOVED * ITERATIONS, 0),
        (10 * ITERATIONS + 100 * confirmed, 0),
    ]


@pytest.mark.parametrize("op", ["confirm", "cancel"])
async def test_a_single_call_whose_try_commits_behind_its_gate_locks_no_hold_late(
    ledger, uow, clock, sessions, deps, op
):
    """The single ConfirmHold (CancelHold) of T found no hold (T's Try in flight, made to wait for
    the payer's row, which a test transaction holds) and went to its barrier row, made to wait by
    a test transaction that inserted it first. The Try committed; a ResolveHolds of the same op
    on U and T (U < T: a twin elsewhere) locked T's hold and waited at U's barrier row (a third
    test transaction's). T's row given back, the single call inserted it and locked T's hold only
    then, waiting for the batch; U's row given back, the batch went on to T's row: before the fix
    a deadlock. Now the single call reads the hold without a lock, finds it, gives its run up and
    runs again, locking the hold first: the batch resolves T, the single call replays it."""
    payer = await ledger.open("payer")
    payee = await ledger.open("payee")
    await ledger.fund(payer, FUNDS)
    tx = f"lh-{uuid.uuid4().hex[:10]}"
    u, t = TccBranch(f"{tx}-1u", "payment"), TccBranch(f"{tx}-2t", "payment")
    attempts: Counter[str] = Counter()
    before = await deadlocks(sessions)

    def deps_of(name: str) -> Deps:
        return Deps(uow=counting_uow(uow, attempts, name), clock=clock)

    if op == "confirm":
        single = lambda d: h.confirm_hold(c.ConfirmHold(t), d)  # noqa: E731
        batch = c.ResolveHolds((c.ConfirmHold(u), c.ConfirmHold(t)))
    else:
        single = lambda d: h.cancel_hold(c.CancelHold(t, "single"), d)  # noqa: E731
        batch = c.ResolveHolds((c.CancelHold(u, "twin"), c.CancelHold(t, "twin")))

    async def insert_row(session, branch: TccBranch) -> int:
        inserted = await session.execute(
            text(
                "INSERT INTO tcc_barriers (global_tx_id, branch_id, op, origin)"
                " VALUES (:g, :b, :op, :op) RETURNING pg_backend_pid()"
            ),
            {"g": branch.global_tx_id, "b": branch.branch_id, "op": op},
        )
        return inserted.scalar_one()

    async with sessions() as on_payer, sessions() as on_t, sessions() as on_u:
        payer_blocker = await hold_account(on_payer, payer)
        t_blocker, u_blocker = await insert_row(on_t, t), await insert_row(on_u, u)
        try_task = asyncio.create_task(
            h.reserve_holds([c.ReserveHold(t, payer, payee, 100, "USD")], deps)
        )
        trying = await blocked_by(sessions, {payer_blocker}, set())  # the Try, for the payer
        single_task = asyncio.create_task(single(deps_of("single")))
        # The single call at its barrier rows (a Cancel first at the Try's row, the Try's).
        await blocked_by(sessions, {t_blocker, trying}, {trying})
        await on_payer.commit()
        assert reasons(await try_task) == ["ok"]
        # The Try has ended: its backend is back in the pool and may serve the batch or the
        # single call's second run (under load it did, and a waiter with its pid went unseen).
        # From here on only transactions still running are told apart by their pids.
        waiting = await blocked_by(sessions, {t_blocker}, set())  # (now at T's row)
        batch_task = asyncio.create_task(h.resolve_holds(batch, deps_of("batch")))
        batching = await blocked_by(sessions, {u_blocker}, {waiting})  # holding T
        await on_t.rollback()
        await blocked_by(sessions, {batching}, set())  # the single call, for T's hold
        await on_u.rollback()
        single_result, batched = await asyncio.gather(single_task, batch_task)
    assert await deadlocks(sessions) == before  # PostgreSQL detected no deadlock
    assert attempts == {"single": 2, "batch": 1}  # the single call ran again, at once
    resolved = "confirmed" if op == "confirm" else "cancelled"
    if op == "confirm":
        assert reasons(batched) == ["HOLD_NOT_FOUND", "ok"]
        assert await barrier_rows(sessions, u) == []
    else:
        assert reasons(batched) == ["ok", "ok"]
        assert batched[0].result.null_compensation
        assert await barrier_rows(sessions, u) == ["cancel", "try"]
    assert not batched[1].result.replayed
    assert single_result.replayed and not single_result.null_compensation
    assert single_result.hold.state.value == resolved
    assert await hold_states(sessions, u, t) == [None, resolved]
    assert await barrier_rows(sessions, t) == sorted([op, "try"])
    paid = 100 if op == "confirm" else 0
    assert await ledger.balances(payer, payee) == [(FUNDS - paid, 0), (paid, 0)]


def _key_on_shard(tag: str, shard: int, shards: int) -> str:
    """A group's shard key (`grouped_holds._group_shard`) that picks `shard` of a sharded
    account for every fee of the group."""
    for n in range(10_000):
        key = f"lh-{tag}-{n}-{uuid.uuid4().hex[:6]}"
        if shard_for(key, shards) == shard:
            return key
    raise AssertionError("no key found")


async def test_a_later_rounds_fee_takes_no_revenue_shard_out_of_order(
    ledger, uow, clock, sessions, deps, monkeypatch
):
    """Fees of a group's Confirms go to one shard of the sharded revenue account, picked for the
    group (`_group_shard`). Group A confirms b1 (a fee), b2 with more than it holds (refused),
    then b2 again (a later round, another fee). A is made to wait for its shard `high` (a test
    transaction holds it) in its first round. Round 11 picked each fee's shard by its Confirm's
    transfer id, b2's `low` < `high`, and a group B confirming c1 (fee to `low`) and c2 (fee to
    `high`) locked `low` and waited for `high` after A; A, given `high`, took `low` in its later
    round: a deadlock, fixed by locking the later rounds' shards up front. Now A's later round
    credits the shard its first round took, and B, whose fees go to its own shard `low`, never
    waits for A: B commits while A still waits, then A runs once, every fee of it in `high`."""
    payers = sorted([await ledger.open(f"payer{i}") for i in range(4)])
    payee_a, payee_b = await ledger.open("payee-a"), await ledger.open("payee-b")
    revenue = await ledger.open("revenue", AccountKind.PLATFORM_REVENUE)
    for payer in payers:
        await ledger.fund(payer, FUNDS)
    await warm_refs(deps, revenue)
    async with uow() as u:
        shards = (await u.accounts.refs([revenue]))[revenue].shards
    low, high = 3, 11
    keys = iter([_key_on_shard("a", high, shards), _key_on_shard("b", low, shards)])
    monkeypatch.setattr(grouped_holds, "_group_shard", lambda: next(keys))
    b1, b2 = (
        TccBranch(f"lh-b1-{uuid.uuid4().hex}", "payment"),
        TccBranch(f"lh-b2-{uuid.uuid4().hex}", "payment"),
    )
    c1, c2 = (
        TccBranch(f"lh-c1-{uuid.uuid4().hex}", "payment"),
        TccBranch(f"lh-c2-{uuid.uuid4().hex}", "payment"),
    )
    reserved = await h.reserve_holds(
        [
            c.ReserveHold(b1, payers[0], payee_a, 100, "USD"),
            c.ReserveHold(b2, payers[1], payee_a, 100, "USD"),
            c.ReserveHold(c1, payers[2], payee_b, 100, "USD"),
            c.ReserveHold(c2, payers[3], payee_b, 100, "USD"),
        ],
        deps,
    )
    assert reasons(reserved) == ["ok"] * 4

    def with_fee(branch: TccBranch, payee: str, amount: int = 0) -> c.ConfirmHold:
        return c.ConfirmHold(branch, amount, (Share(payee, 9_000), Share(revenue, 1_000)), payee)

    attempts: Counter[str] = Counter()
    before = await deadlocks(sessions)

    def deps_of(name: str) -> Deps:
        return Deps(uow=counting_uow(uow, attempts, name), clock=clock)

    group_a = c.ResolveHolds(
        (with_fee(b1, payee_a), with_fee(b2, payee_a, 101), with_fee(b2, payee_a))
    )
    group_b = c.ResolveHolds((with_fee(c1, payee_b), with_fee(c2, payee_b)))
    async with sessions() as holder:
        held = await holder.execute(
            text(
                "SELECT pg_backend_pid() FROM account_shards"
                " WHERE account_id = :id AND shard = :shard FOR NO KEY UPDATE"
            ),
            {"id": revenue, "shard": high},
        )
        blocker = held.scalar_one()
        first = asyncio.create_task(h.resolve_holds(group_a, deps_of("A")))
        await blocked_by(sessions, {blocker}, set())  # A, round 1, for `high`
        outcomes_b = await h.resolve_holds(group_b, deps_of("B"))  # not behind A
        assert not first.done()
        await holder.commit()
        outcomes_a = await first
    assert await deadlocks(sessions) == before  # PostgreSQL detected no deadlock
    assert attempts == {"A": 1, "B": 1}  # neither ran twice
    assert reasons(outcomes_a) == ["ok", "VALIDATION_FAILED", "ok"]
    assert reasons(outcomes_b) == ["ok", "ok"]
    assert await hold_states(sessions, b1, b2, c1, c2) == ["confirmed"] * 4
    assert await ledger.balances(*payers, payee_a, payee_b, revenue) == [
        *[(FUNDS - 100, 0)] * 4,
        (180, 0),
        (180, 0),
        (40, 0),
    ]
    async with sessions() as session:
        fees = await session.execute(
            text(
                "SELECT shard, posted FROM account_shards"
                " WHERE account_id = :id AND posted <> 0 ORDER BY shard"
            ),
            {"id": revenue},
        )
        assert [tuple(row) for row in fees] == [(low, 20), (high, 20)]  # each group's one shard
