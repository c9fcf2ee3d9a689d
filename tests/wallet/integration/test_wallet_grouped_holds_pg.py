"""Grouped holds on real PostgreSQL: concurrent ReserveHold and ConfirmHold calls run together in
one transaction (grouped_holds, through the batcher), each with its own barrier row and outcome."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Callable

import asyncpg
import pytest
from sqlalchemy import text

from hirepay_dev.pg import libpq_url
from hirepay_platform.errors import HirepayError
from hirepay_platform.tcc import TccBranch
from tests.support.pg_plans import generic_plan
from tests.wallet.integration.conftest import barrier_rows, warm_refs
from wallet.domain import commands as c
from wallet.domain.holds import HoldState
from wallet.domain.ledger import Leg
from wallet.domain.model import AccountKind
from wallet.domain.splits import Share
from wallet.service_layer import handlers as h
from wallet.service_layer.batcher import HoldBatchers
from wallet.service_layer.handlers.batches import BatchOutcome

pytestmark = pytest.mark.usefixtures("sound")


def _branch(tag: str = "") -> TccBranch:
    return TccBranch(f"grp-{tag}{uuid.uuid4().hex[:12]}", "payment")


def _summary(outcomes: list[BatchOutcome]) -> list[str]:
    """Per call: "new", "replayed", or the reason of its error."""
    return [
        o.error.reason if o.error else ("replayed" if o.result.replayed else "new")
        for o in outcomes
    ]


async def _outcome(call) -> object:
    try:
        return await call
    except HirepayError as exc:
        return exc.reason


async def test_twins_in_one_group_make_one_hold_and_one_transfer(ledger, deps):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1000)
    branch = _branch()
    reserve = c.ReserveHold(branch, alice, bob, 600, "USD")
    changed = c.ReserveHold(branch, alice, bob, 601, "USD")
    outcomes = await h.reserve_holds([reserve, reserve, changed, reserve], deps)
    assert _summary(outcomes) == ["new", "replayed", "IDEMPOTENCY_MISMATCH", "replayed"]
    assert outcomes[1].result.hold == outcomes[0].result.hold
    assert await ledger.balances(alice, bob) == [(1000, 600), (0, 0)]
    confirm = c.ConfirmHold(branch, 500)
    outcomes = await h.confirm_holds([confirm, confirm, c.ConfirmHold(branch, 400)], deps)
    assert _summary(outcomes) == ["new", "replayed", "IDEMPOTENCY_MISMATCH"]
    assert outcomes[1].result.transfer == outcomes[0].result.transfer
    assert outcomes[0].result.hold.state is HoldState.CONFIRMED
    assert await ledger.balances(alice, bob) == [(500, 0), (500, 0)]


async def test_a_failing_reserve_fails_alone_and_leaves_nothing(ledger, deps, sessions):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    eur = await ledger.open("carol", unit="EUR")
    await ledger.fund(alice, 1000)
    good = [_branch() for _ in range(3)]
    poor, foreign, cancelled = _branch(), _branch(), _branch()
    await h.cancel_hold(c.CancelHold(cancelled), deps)  # its Cancel came before any Try
    cmds = [
        c.ReserveHold(good[0], alice, bob, 100, "USD"),
        c.ReserveHold(poor, alice, bob, 5000, "USD"),  # more than alice has
        c.ReserveHold(good[1], alice, bob, 200, "USD"),
        c.ReserveHold(foreign, alice, eur, 100, "USD"),  # destination in another unit
        c.ReserveHold(cancelled, alice, bob, 100, "USD"),  # hanging Try
        c.ReserveHold(_branch(), alice, alice, 100, "USD"),  # invalid: same account
        c.ReserveHold(good[2], alice, bob, 300, "USD"),
    ]
    outcomes = await h.reserve_holds(cmds, deps)
    assert _summary(outcomes) == [
        "new",
        "INSUFFICIENT_FUNDS",
        "new",
        "UNIT_MISMATCH",
        "HOLD_CANCELLED",
        "VALIDATION_FAILED",
        "new",
    ]
    assert await ledger.balances(alice) == [(1000, 600)]
    # The refused Try left no barrier row: the same branch, affordable now, reserves.
    assert await barrier_rows(sessions, poor) == []
    again = await h.reserve_hold(c.ReserveHold(poor, alice, bob, 400, "USD"), deps)
    assert again.hold.state is HoldState.PENDING and not again.replayed
    assert await ledger.balances(alice) == [(1000, 1000)]
    for branch in good:
        assert await barrier_rows(sessions, branch) == ["try"]


async def test_a_failing_confirm_fails_alone_and_leaves_nothing(ledger, deps, sessions, clock):
    customer, contractor = await ledger.open("customer"), await ledger.open("contractor")
    revenue = await ledger.open("platform", AccountKind.PLATFORM_REVENUE)
    await ledger.fund(customer, 10_000)
    good, resolved, expiring = [_branch() for _ in range(2)], _branch(), _branch()
    for branch in [*good, resolved]:
        await h.reserve_hold(c.ReserveHold(branch, customer, contractor, 1000, "USD", 600), deps)
    await h.reserve_hold(c.ReserveHold(expiring, customer, contractor, 1000, "USD", 10), deps)
    await h.cancel_hold(c.CancelHold(resolved), deps)
    clock.advance(20)  # `expiring` is past its expiry (the worker has not released it yet)
    split = (Share(revenue, 1000), Share(contractor, 9000))
    cmds = [
        c.ConfirmHold(good[0], 0, split, contractor),
        c.ConfirmHold(resolved),
        c.ConfirmHold(_branch()),  # no hold at all
        c.ConfirmHold(expiring),
        c.ConfirmHold(good[1], 1500),  # more than the hold
        c.ConfirmHold(good[1], 700),  # a later call of the same branch, in a later round
    ]
    outcomes = await h.confirm_holds(cmds, deps)
    assert _summary(outcomes) == [
        "new",
        "HOLD_ALREADY_RESOLVED",
        "HOLD_NOT_FOUND",
        "HOLD_EXPIRED",
        "VALIDATION_FAILED",
        "new",
    ]
    assert await barrier_rows(sessions, expiring) == ["try"]  # the refused Confirm left nothing
    assert await ledger.balances(customer, contractor, revenue) == [
        (10_000 - 1700, 1000),  # the expired hold is still pending until released
        (900 + 700, 0),
        (100, 0),
    ]
    assert (await h.get_hold(c.GetHold(good[1]), deps)).hold.confirmed_amount == 700


async def test_an_overdraft_within_one_group_takes_the_calls_in_order(ledger, deps):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1000)
    cmds = [c.ReserveHold(_branch(), alice, bob, 300, "USD") for _ in range(5)]
    cmds.insert(3, c.ReserveHold(_branch(), alice, bob, 100, "USD"))
    outcomes = await h.reserve_holds(cmds, deps)
    # 300 + 300 + 300 = 900 fit, then 100 fits exactly, then nothing more
    assert _summary(outcomes) == ["new"] * 4 + ["INSUFFICIENT_FUNDS"] * 2
    assert await ledger.balances(alice) == [(1000, 1000)]
    assert (await ledger.balance(alice)).available == 0


async def test_a_group_of_reserves_is_one_statement_committing_itself(
    ledger, deps, sessions, round_trips
):
    """Issue 13: distinct branches on unsharded accounts that all fit: one round trip for the
    group (barrier rows, locks, holds, reservations), no BEGIN or COMMIT; calls whose branch was
    there already are answered from their barrier rows (reads), the others unaffected."""
    alice, bob, carol = [await ledger.open(n) for n in ("alice", "bob", "carol")]
    await ledger.fund(alice, 1000)
    await ledger.fund(carol, 1000)
    earlier, cancelled = _branch(), _branch()
    await h.reserve_hold(c.ReserveHold(earlier, alice, bob, 100, "USD"), deps)
    await h.cancel_hold(c.CancelHold(cancelled), deps)  # its Cancel came before any Try
    await warm_refs(deps, alice, bob, carol)
    fresh = [_branch() for _ in range(4)]
    cmds = [
        c.ReserveHold(fresh[0], alice, bob, 300, "USD"),
        c.ReserveHold(earlier, alice, bob, 100, "USD"),  # a retry: replayed
        c.ReserveHold(fresh[1], carol, bob, 400, "USD"),
        c.ReserveHold(cancelled, alice, bob, 100, "USD"),  # hanging Try
        c.ReserveHold(fresh[2], alice, bob, 600, "USD"),  # 100 + 300 + 600 = 1000: fits
        c.ReserveHold(fresh[3], carol, alice, 600, "USD"),
    ]
    with round_trips:
        outcomes = await h.reserve_holds(cmds, deps)
    assert _summary(outcomes) == ["new", "replayed", "new", "HOLD_CANCELLED", "new", "new"]
    written = [s for s in round_trips.statements if not s.startswith("SELECT")]
    assert len(written) == 1 and written[0].startswith("WITH entered AS (INSERT INTO tcc_barr")
    assert round_trips.transaction_control == []
    assert await ledger.balances(alice, carol, bob) == [(1000, 1000), (1000, 1000), (0, 0)]
    for branch in fresh:
        assert await barrier_rows(sessions, branch) == ["try"]
    assert await barrier_rows(sessions, cancelled) == ["cancel", "try"]  # the Cancel's rows only


async def test_a_reserve_group_that_does_not_fit_runs_checked_and_refuses_alone(
    ledger, deps, sessions, round_trips
):
    """Issue 13: when the group's holds overdraw an account together, its one statement writes
    nothing (the accounts' no-overdraft check) and the group runs checked: each Try judged in
    order, the one that does not fit refused alone, leaving no barrier row, the others held."""
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1000)
    await warm_refs(deps, alice, bob)
    branches = [_branch() for _ in range(4)]
    cmds = [
        c.ReserveHold(b, alice, bob, a, "USD")
        for b, a in zip(branches, (400, 700, 500, 100), strict=True)
    ]
    with round_trips:
        outcomes = await h.reserve_holds(cmds, deps)
    assert _summary(outcomes) == ["new", "INSUFFICIENT_FUNDS", "new", "new"]
    assert await ledger.balances(alice) == [(1000, 1000)]
    assert await barrier_rows(sessions, branches[1]) == []
    # the refused statement, then BEGIN + barrier rows and locks + holds + COMMIT
    assert round_trips.transaction_control == ["BEGIN;", "COMMIT;"]


async def test_a_group_of_confirms_is_one_statement_committing_itself(
    ledger, deps, sessions, round_trips
):
    """Issue 13: Confirms of holds this process reserved (grouped), still pending: one round trip
    for the group (hold locks, transfers with a fee into the sharded revenue account, barrier
    rows, holds saved), no BEGIN or COMMIT; each call gets its own transfer."""
    customer, contractor = await ledger.open("customer"), await ledger.open("contractor")
    revenue = await ledger.open("platform", AccountKind.PLATFORM_REVENUE)
    await ledger.fund(customer, 10_000)
    branches = [_branch() for _ in range(3)]
    reserved = await h.reserve_holds(
        [c.ReserveHold(b, customer, contractor, 1000, "USD") for b in branches], deps
    )
    assert _summary(reserved) == ["new"] * 3
    await warm_refs(deps, customer, contractor, revenue)
    split = (Share(revenue, 1000), Share(contractor, 9000))
    cmds = [
        c.ConfirmHold(branches[0]),
        c.ConfirmHold(branches[1], 400),  # part of it; the rest is released
        c.ConfirmHold(branches[2], 0, split, contractor),
    ]
    with round_trips:
        outcomes = await h.confirm_holds(cmds, deps)
    assert _summary(outcomes) == ["new"] * 3
    assert [s.split()[0] for s in round_trips.statements] == ["WITH"]
    assert "account_shards" in round_trips.statements[0]  # the fee's shard is changed
    assert round_trips.transaction_control == []
    assert [o.result.hold.confirmed_amount for o in outcomes] == [1000, 400, 1000]
    assert [sum(e.amount for e in o.result.transfer.entries if e.amount > 0) for o in outcomes] == [
        1000,
        400,
        1000,
    ]
    assert await ledger.balances(customer, contractor, revenue) == [
        (10_000 - 2400, 0),
        (1000 + 400 + 900, 0),
        (100, 0),
    ]
    for branch in branches:
        assert await barrier_rows(sessions, branch) == ["confirm", "try"]
        hold = (await h.get_hold(c.GetHold(branch), deps)).hold
        assert hold.state is HoldState.CONFIRMED
    again = await h.confirm_holds(cmds[:1], deps)  # a retry: its hold is resolved, replayed
    assert _summary(again) == ["replayed"]
    assert again[0].result.transfer == outcomes[0].result.transfer


async def test_runs_without_a_sharded_account_send_no_shard_changes(ledger, deps, round_trips):
    """Issue 13: a group of Confirms, or of transfers, none touching a sharded account, is the
    one statement less its shard changes (fewer plan nodes each time); with a fee into the
    sharded revenue account the same call sends the shard changes, and every balance is exact."""
    customer, contractor = await ledger.open("customer"), await ledger.open("contractor")
    revenue = await ledger.open("platform", AccountKind.PLATFORM_REVENUE)
    await ledger.fund(customer, 10_000)
    await warm_refs(deps, customer, contractor, revenue)
    branches = [_branch() for _ in range(2)]
    reserved = await h.reserve_holds(
        [c.ReserveHold(b, customer, contractor, 1000, "USD") for b in branches], deps
    )
    assert _summary(reserved) == ["new"] * 2
    with round_trips:
        confirmed = await h.confirm_holds([c.ConfirmHold(b) for b in branches], deps)
    assert _summary(confirmed) == ["new"] * 2
    assert len(round_trips.statements) == 1 and round_trips.transaction_control == []
    assert "account_shards" not in round_trips.statements[0]
    plain = (Leg(customer, contractor, 300, "USD"),)
    fee = (*plain, Leg(customer, revenue, 30, "USD"))
    for legs, shards in ((plain, False), (fee, True)):
        run = c.CreateTransfers(tuple(c.Transfer(f"run-{uuid.uuid4().hex}", legs) for _ in "ab"))
        with round_trips:
            posted = await h.create_transfers(run, deps)
        assert _summary(posted) == ["new"] * 2
        assert len(round_trips.statements) == 1 and round_trips.transaction_control == []
        assert ("account_shards" in round_trips.statements[0]) is shards
    assert await ledger.balances(customer, contractor, revenue) == [
        (10_000 - 2000 - 600 - 660, 0),
        (2000 + 600 + 600, 0),
        (60, 0),
    ]


async def test_a_confirm_group_with_a_resolved_hold_runs_checked_and_refuses_alone(
    ledger, deps, sessions, round_trips, clock
):
    """Issue 13: a remembered hold cancelled (or expired) since: the group's one statement finds
    it under its lock, writes nothing, and the group runs checked; that Confirm is refused alone
    and leaves no barrier row, the others post."""
    customer, contractor = await ledger.open("customer"), await ledger.open("contractor")
    await ledger.fund(customer, 10_000)
    branches = [_branch() for _ in range(4)]
    await h.reserve_holds(
        [c.ReserveHold(b, customer, contractor, 1000, "USD", 600) for b in branches[:3]], deps
    )
    await h.reserve_holds([c.ReserveHold(branches[3], customer, contractor, 1000, "USD", 10)], deps)
    await h.cancel_hold(c.CancelHold(branches[1]), deps)
    clock.advance(20)  # branches[3] is past its expiry, not yet released
    await warm_refs(deps, customer, contractor)
    with round_trips:
        outcomes = await h.confirm_holds([c.ConfirmHold(b) for b in branches], deps)
    assert _summary(outcomes) == ["new", "HOLD_ALREADY_RESOLVED", "new", "HOLD_EXPIRED"]
    # Planning found the expired hold: no one-statement attempt, the group ran checked.
    assert round_trips.transaction_control == ["BEGIN;", "COMMIT;"]
    assert not any(s.startswith("WITH expected") for s in round_trips.statements)
    assert await ledger.balances(customer, contractor) == [(8000, 1000), (2000, 0)]
    assert await barrier_rows(sessions, branches[1]) == ["cancel", "try"]
    assert await barrier_rows(sessions, branches[3]) == ["try"]
    # Only the cancelled one (remembered as pending) reaches the statement, which writes nothing.
    fresh = [_branch() for _ in range(2)]
    await h.reserve_holds([c.ReserveHold(b, customer, contractor, 500, "USD") for b in fresh], deps)
    await h.cancel_hold(c.CancelHold(fresh[0]), deps)
    with round_trips:
        outcomes = await h.confirm_holds([c.ConfirmHold(b) for b in fresh], deps)
    assert _summary(outcomes) == ["HOLD_ALREADY_RESOLVED", "new"]
    assert round_trips.statements[0].startswith("WITH expected")  # it wrote nothing, then:
    assert round_trips.transaction_control == ["BEGIN;", "COMMIT;"]
    assert await barrier_rows(sessions, fresh[0]) == ["cancel", "try"]
    assert await ledger.balances(customer, contractor) == [(7500, 1000), (2500, 0)]


async def test_grouped_calls_through_the_batcher_never_overdraw(ledger, deps):
    """Sixty concurrent Reserves of 70 on 1000 through the batcher, then their Confirms: exactly
    what is affordable is held, then posted."""
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1000)
    batchers = HoldBatchers(deps, max_items=8, window_seconds=0.002, max_in_flight=2)
    branches = [_branch() for _ in range(60)]
    reserved = await asyncio.gather(
        *(
            _outcome(batchers.reserve.call(c.ReserveHold(b, alice, bob, 70, "USD")))
            for b in branches
        )
    )
    reasons = Counter(o if isinstance(o, str) else "ok" for o in reserved)
    assert reasons == {"ok": 14, "INSUFFICIENT_FUNDS": 46}  # 14 * 70 = 980 <= 1000 < 15 * 70
    assert await ledger.balances(alice, bob) == [(1000, 980), (0, 0)]
    held = [b for b, o in zip(branches, reserved, strict=True) if not isinstance(o, str)]
    confirms = [batchers.confirm.call(c.ConfirmHold(b)) for b in held for _ in range(2)]
    confirmed = await asyncio.gather(*(_outcome(x) for x in confirms))
    assert sum(not o.replayed for o in confirmed) == len(held)  # twins: one posts, one replays
    assert await ledger.balances(alice, bob) == [(20, 0), (980, 0)]


async def test_cancel_before_try_racing_grouped_reserves(ledger, deps):
    """Each round: a Cancel races its branch's Try, which is grouped with unrelated Trys. Either
    the Cancel came first (the Try is refused, nothing reserved) or the Try did (the Cancel
    releases it); the unrelated Trys always reserve."""
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1_000_000)
    batchers = HoldBatchers(deps, max_items=8, window_seconds=0.002, max_in_flight=2)
    rng = random.Random(13)
    seen: Counter[str] = Counter()
    bystanders = 0
    for i in range(30):
        branch = _branch(f"r{i}-")
        others = [_branch() for _ in range(3)]
        calls: list[tuple[str, object]] = [
            ("reserve", batchers.reserve.call(c.ReserveHold(branch, alice, bob, 100, "USD"))),
            ("cancel", h.cancel_hold(c.CancelHold(branch), deps)),
            *(
                ("other", batchers.reserve.call(c.ReserveHold(o, alice, bob, 10, "USD")))
                for o in others
            ),
        ]
        rng.shuffle(calls)
        results = await asyncio.gather(*(_outcome(call) for _, call in calls))
        by_name: dict[str, list[object]] = {"reserve": [], "cancel": [], "other": []}
        for (name, _), result in zip(calls, results, strict=True):
            by_name[name].append(result)
        (reserve,), (cancel,) = by_name["reserve"], by_name["cancel"]
        assert not isinstance(cancel, str)  # a Cancel always succeeds
        if cancel.null_compensation:
            assert reserve == "HOLD_CANCELLED"
            seen["cancel first"] += 1
        else:
            assert reserve.hold.state is HoldState.PENDING
            assert cancel.hold.state is HoldState.CANCELLED
            seen["reserve first"] += 1
        assert all(o.hold.state is HoldState.PENDING for o in by_name["other"])
        bystanders += 3
        late = await _outcome(batchers.reserve.call(c.ReserveHold(branch, alice, bob, 100, "USD")))
        assert late == "HOLD_CANCELLED" or late.hold.state is HoldState.CANCELLED
        assert await ledger.balances(alice) == [(1_000_000, bystanders * 10)]
    assert sum(seen.values()) == 30


async def test_a_group_of_confirms_posts_in_one_statement_with_fees_and_parts(ledger, deps):
    """Confirms never lower availability, so a group of them is posted by one statement (post_run):
    whole and partial Confirms, a fee split into the sharded revenue account; every balance
    exact, the unconfirmed part of a hold released."""
    customer, contractor = await ledger.open("customer"), await ledger.open("contractor")
    revenue = await ledger.open("platform", AccountKind.PLATFORM_REVENUE)
    await ledger.fund(customer, 5000)
    branches = [_branch() for _ in range(3)]
    for branch in branches:
        await h.reserve_hold(c.ReserveHold(branch, customer, contractor, 1000, "USD"), deps)
    split = (Share(revenue, 1000), Share(contractor, 9000))
    outcomes = await h.confirm_holds(
        [
            c.ConfirmHold(branches[0], 0, split, contractor),
            c.ConfirmHold(branches[1], 400),
            c.ConfirmHold(branches[2], 0, split, contractor),
        ],
        deps,
    )
    assert _summary(outcomes) == ["new"] * 3
    assert await ledger.balances(customer, contractor, revenue) == [
        (5000 - 2400, 0),
        (900 + 400 + 900, 0),
        (200, 0),
    ]
    transfers = [o.result.transfer for o in outcomes]
    assert [sorted(e.amount for e in x.entries) for x in transfers] == [
        [-1000, 100, 900],
        [-400, 400],
        [-1000, 100, 900],
    ]


async def test_a_confirm_group_with_a_hold_changed_while_pending_runs_checked(
    ledger, deps, sessions, round_trips
):
    """Issue 13: the one statement compares each remembered hold's row version, not its columns:
    a hold whose row changed since its Reserve wrote it (here: another amount, still pending, as a
    Try rolled back and its branch reserved again elsewhere) makes it write nothing; the group
    runs checked and confirms the hold as it is, the other one too."""
    customer, contractor = await ledger.open("customer"), await ledger.open("contractor")
    await ledger.fund(customer, 10_000)
    branches = [_branch() for _ in range(2)]
    await h.reserve_holds(
        [c.ReserveHold(b, customer, contractor, 1000, "USD") for b in branches], deps
    )
    async with sessions() as session, session.begin():
        await session.execute(
            text("UPDATE holds SET amount = 400 WHERE global_tx_id = :g AND branch_id = :b"),
            {"g": branches[0].global_tx_id, "b": branches[0].branch_id},
        )
        await session.execute(
            text("UPDATE accounts SET pending = pending - 600 WHERE id = CAST(:a AS uuid)"),
            {"a": customer},
        )
    await warm_refs(deps, customer, contractor)
    with round_trips:
        outcomes = await h.confirm_holds([c.ConfirmHold(b) for b in branches], deps)
    assert _summary(outcomes) == ["new", "new"]
    assert round_trips.statements[0].startswith("WITH expected")  # it wrote nothing, then:
    assert round_trips.transaction_control == ["BEGIN;", "COMMIT;"]
    assert [o.result.hold.confirmed_amount for o in outcomes] == [400, 1000]
    assert await ledger.balances(customer, contractor) == [(8600, 0), (1400, 0)]


async def test_concurrent_twin_confirm_groups_post_once(ledger, deps, sessions):
    """Issue 13: two groups confirming the same remembered holds at once: both plan on the same
    row version; the one that locks second finds a newer version (confirmed) and writes nothing,
    its group runs checked and replays. One transfer per hold, balances exact."""
    customer, contractor = await ledger.open("customer"), await ledger.open("contractor")
    await ledger.fund(customer, 10_000)
    await warm_refs(deps, customer, contractor)
    for _ in range(5):
        branches = [_branch() for _ in range(3)]
        await h.reserve_holds(
            [c.ReserveHold(b, customer, contractor, 100, "USD") for b in branches], deps
        )
        cmds = [c.ConfirmHold(b) for b in branches]
        first, second = await asyncio.gather(
            h.confirm_holds(cmds, deps), h.confirm_holds(cmds, deps)
        )
        assert sorted(_summary(first) + _summary(second)) == ["new"] * 3 + ["replayed"] * 3
        for one, other in zip(first, second, strict=True):
            assert one.result.transfer == other.result.transfer
        for branch in branches:
            assert await barrier_rows(sessions, branch) == ["confirm", "try"]
    assert await ledger.balances(customer, contractor) == [(8500, 0), (1500, 0)]


@pytest.fixture(scope="module")
def fresh_wallet_db_url(make_service_database: Callable[[str], str]) -> str:
    """A wallet database just migrated: tables never analysed, as a new wallet's first calls see
    them (and the generic plans its connections cache then)."""
    return make_service_database("wallet")


async def test_a_confirm_group_finds_each_hold_by_its_key_and_probes_no_barrier_row(
    ledger, deps, round_trips, fresh_wallet_db_url
):
    """Issue 13: the one-statement Confirm locks each hold through its key whatever the tables'
    statistics. As joins, its generic plan - made while the tables look tiny and then cached by
    the connection - hashed the group against a scan of every hold and of every Confirm barrier
    row ever made, on each call. It reads no barrier row at all (walhold17): it inserts the
    Confirms' rows without ON CONFLICT (no speculative insertion, which probes the key first),
    and the barrier's key refuses a branch that had one (the group then runs checked)."""
    customer, contractor = await ledger.open("customer"), await ledger.open("contractor")
    await ledger.fund(customer, 1000)
    await warm_refs(deps, customer, contractor)
    branches = [_branch() for _ in range(2)]
    await h.reserve_holds(
        [c.ReserveHold(b, customer, contractor, 100, "USD") for b in branches], deps
    )
    with round_trips:
        outcomes = await h.confirm_holds([c.ConfirmHold(b) for b in branches], deps)
    assert _summary(outcomes) == ["new", "new"]
    statement = round_trips.statements[0]
    assert statement.startswith("WITH expected")
    connection = await asyncpg.connect(libpq_url(fresh_wallet_db_url))
    try:
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        plan = await generic_plan(connection, statement)
    finally:
        await connection.close()
    held = plan[plan.index("CTE held") : plan.index("CTE item")]
    assert "Index Scan using pk_holds on holds" in held and "Seq Scan" not in held, plan
    assert "tcc_barriers" not in held, plan
    entered = plan[plan.index("CTE entered") :]
    assert "Insert on tcc_barriers" in entered and "Conflict" not in entered, plan
