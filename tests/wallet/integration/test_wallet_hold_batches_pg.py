"""Batches of holds on real PostgreSQL: CreateHolds (many Trys) and ResolveHolds (many Confirms and
Cancels) in one transaction each, every item with the outcome its single call would have had -
barrier semantics, idempotency, overdraft, expiry - and every balance exact, also under races."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest

from hirepay_platform.errors import HirepayError
from hirepay_platform.tcc import TccBranch
from tests.wallet.integration.conftest import barrier_rows, warm_refs
from wallet.domain import commands as c
from wallet.domain.holds import HoldState
from wallet.domain.model import AccountKind
from wallet.domain.splits import Share
from wallet.service_layer import handlers as h
from wallet.service_layer.handlers.batches import MAX_BATCH, BatchOutcome

pytestmark = pytest.mark.usefixtures("sound")


def _branch(tag: str = "") -> TccBranch:
    return TccBranch(f"hb-{tag}{uuid.uuid4().hex[:12]}", "payment")


def _summary(outcomes: list[BatchOutcome]) -> list[str]:
    """Per item: "new", "replayed", "null", or the reason of its error."""
    out = []
    for o in outcomes:
        if o.error is not None:
            out.append(o.error.reason)
        elif o.result.null_compensation and not o.result.replayed:
            out.append("null")
        else:
            out.append("replayed" if o.result.replayed else "new")
    return out


def _reserves(branches, account, destination, amount, **extra) -> c.CreateHolds:
    return c.CreateHolds(
        tuple(c.ReserveHold(b, account, destination, amount, "USD", **extra) for b in branches)
    )


async def test_each_hold_of_a_create_batch_has_its_own_outcome(ledger, deps, sessions):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    euro = await ledger.open("carol", unit="EUR")
    await ledger.fund(alice, 1000)
    first, second, poor, foreign, cancelled = (_branch() for _ in range(5))
    await h.cancel_hold(c.CancelHold(cancelled), deps)  # its Cancel came before any Try
    batch = c.CreateHolds(
        (
            c.ReserveHold(first, alice, bob, 300, "USD", description="deposit"),
            c.ReserveHold(poor, alice, bob, 5000, "USD"),  # more than alice has
            c.ReserveHold(second, alice, bob, 200, "USD"),
            c.ReserveHold(foreign, alice, euro, 100, "USD"),  # destination in another unit
            c.ReserveHold(_branch(), alice, str(uuid.uuid4()), 100, "USD"),  # no such account
            c.ReserveHold(cancelled, alice, bob, 100, "USD"),  # hanging Try
            c.ReserveHold(_branch(), alice, alice, 100, "USD"),  # invalid: same account
            c.ReserveHold(first, alice, bob, 300, "USD", description="deposit"),  # a repeat
            c.ReserveHold(first, alice, bob, 301, "USD", description="deposit"),  # changed
            c.ReserveHold(poor, alice, bob, 500, "USD"),  # the refused branch is free again
        )
    )
    outcomes = await h.create_holds(batch, deps)
    assert _summary(outcomes) == [
        "new",
        "INSUFFICIENT_FUNDS",
        "new",
        "UNIT_MISMATCH",
        "ACCOUNT_NOT_FOUND",
        "HOLD_CANCELLED",
        "VALIDATION_FAILED",
        "replayed",
        "IDEMPOTENCY_MISMATCH",
        "new",
    ]
    assert outcomes[7].result.hold == outcomes[0].result.hold
    assert outcomes[8].error.metadata["field"] == "amount"
    assert await ledger.balances(alice, bob) == [(1000, 1000), (0, 0)]
    assert (await ledger.balance(alice)).available == 0
    for branch in (first, second, poor):
        assert await barrier_rows(sessions, branch) == ["try"]
    assert await barrier_rows(sessions, foreign) == []  # a refused Try leaves nothing
    assert await barrier_rows(sessions, cancelled) == ["cancel", "try"]  # the Cancel's only
    # The whole batch again: every hold made is a replay, nothing moves (the branch first
    # refused holds 500 now, so the Try of 5000 is another request for it).
    again = await h.create_holds(batch, deps)
    assert _summary(again)[:3] == ["replayed", "IDEMPOTENCY_MISMATCH", "replayed"]
    assert _summary(again)[7:] == ["replayed", "IDEMPOTENCY_MISMATCH", "replayed"]
    assert await ledger.balances(alice, bob) == [(1000, 1000), (0, 0)]


async def test_each_item_of_a_resolve_batch_has_its_own_outcome(ledger, deps, sessions, clock):
    customer, contractor = await ledger.open("customer"), await ledger.open("contractor")
    revenue = await ledger.open("platform", AccountKind.PLATFORM_REVENUE)
    await ledger.fund(customer, 10_000)
    a, b, d, e, late = (_branch() for _ in range(5))
    held = await h.create_holds(_reserves([a, b, d, e], customer, contractor, 1000), deps)
    assert _summary(held) == ["new"] * 4
    await h.create_holds(_reserves([late], customer, contractor, 500, expires_in_seconds=10), deps)
    never = _branch()  # no Try yet: its Cancel is a null compensation
    clock.advance(20)  # `late` is past its expiry, not yet released
    split = (Share(revenue, 1000), Share(contractor, 9000))
    batch = c.ResolveHolds(
        (
            c.ConfirmHold(a, 600, split, contractor),  # part of it, a fee split off
            c.CancelHold(b, "customer left"),
            c.ConfirmHold(b),  # after its Cancel in this batch: refused
            c.CancelHold(never),  # before any Try
            c.ConfirmHold(never),  # its Cancel came first
            c.CancelHold(a),  # after its Confirm in this batch: refused
            None,  # neither a Confirm nor a Cancel
            c.ConfirmHold(late),  # expired
            c.ConfirmHold(_branch()),  # no hold at all
            c.ConfirmHold(a, 600, split, contractor),  # a repeat
            c.ConfirmHold(a, 500),  # the same branch, other fields
            c.CancelHold(b, "another reason"),  # a repeat (whatever its reason)
            c.ConfirmHold(d, 5000),  # more than the hold
            c.ConfirmHold(e),
            c.CancelHold(late),  # a pending hold past its expiry is released by its Cancel
        )
    )
    outcomes = await h.resolve_holds(batch, deps)
    assert _summary(outcomes) == [
        "new",
        "new",
        "HOLD_ALREADY_RESOLVED",
        "null",
        "HOLD_CANCELLED",
        "HOLD_ALREADY_RESOLVED",
        "VALIDATION_FAILED",
        "HOLD_EXPIRED",
        "HOLD_NOT_FOUND",
        "replayed",
        "IDEMPOTENCY_MISMATCH",
        "replayed",
        "VALIDATION_FAILED",
        "new",
        "new",
    ]
    assert "action" in outcomes[6].error.metadata
    assert outcomes[0].result.hold.confirmed_amount == 600
    assert sorted(x.amount for x in outcomes[0].result.transfer.entries) == [-600, 60, 540]
    assert outcomes[9].result.transfer == outcomes[0].result.transfer
    assert outcomes[1].result.hold.state is HoldState.CANCELLED
    assert outcomes[11].result.hold.state is HoldState.CANCELLED
    assert outcomes[14].result.hold.state is HoldState.CANCELLED
    # a: 600 posted (60 fee), b and late released, d still held, e posted in full.
    assert await ledger.balances(customer, contractor, revenue) == [
        (10_000 - 1600, 1000),
        (540 + 1000, 0),
        (60, 0),
    ]
    assert await barrier_rows(sessions, a) == ["confirm", "try"]
    assert await barrier_rows(sessions, b) == ["cancel", "try"]
    assert await barrier_rows(sessions, never) == ["cancel", "try"]
    assert await barrier_rows(sessions, d) == ["try"]  # its refused Confirm left nothing
    # The Cancel before the Try keeps a late Try from reserving; d may still be confirmed.
    late_try = await h.create_holds(_reserves([never], customer, contractor, 100), deps)
    assert _summary(late_try) == ["HOLD_CANCELLED"]
    done = await h.resolve_holds(c.ResolveHolds((c.ConfirmHold(d, 1000),)), deps)
    assert _summary(done) == ["new"]
    assert await ledger.balances(customer, contractor) == [(10_000 - 2600, 0), (2540, 0)]


async def test_batches_and_single_calls_share_each_branchs_barrier(ledger, deps):
    """An item of a batch and a single call of the same branch are the same call: a retry of one
    by the other is answered as a replay, a Cancel of either kind before a Try of the other kind
    is a null compensation."""
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1000)
    single, batched, cancelled = _branch(), _branch(), _branch()
    await h.reserve_hold(c.ReserveHold(single, alice, bob, 100, "USD"), deps)
    outcomes = await h.create_holds(_reserves([single, batched], alice, bob, 100), deps)
    assert _summary(outcomes) == ["replayed", "new"]
    again = await h.reserve_hold(c.ReserveHold(batched, alice, bob, 100, "USD"), deps)
    assert again.replayed
    await h.confirm_hold(c.ConfirmHold(single), deps)
    resolved = await h.resolve_holds(
        c.ResolveHolds((c.ConfirmHold(single), c.CancelHold(batched), c.CancelHold(cancelled))),
        deps,
    )
    assert _summary(resolved) == ["replayed", "new", "null"]
    assert (await h.cancel_hold(c.CancelHold(batched), deps)).replayed
    with pytest.raises(HirepayError) as refused:
        await h.reserve_hold(c.ReserveHold(cancelled, alice, bob, 100, "USD"), deps)
    assert refused.value.reason == "HOLD_CANCELLED"
    assert await ledger.balances(alice, bob) == [(900, 0), (100, 0)]


async def test_cancels_release_expired_and_released_holds_as_their_single_calls(
    ledger, deps, clock
):
    """A Cancel of a hold the expiry worker released succeeds and changes nothing (the money is
    free either way), in a batch as alone."""
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1000)
    expired, pending = _branch(), _branch()
    await h.create_holds(_reserves([expired], alice, bob, 300, expires_in_seconds=10), deps)
    await h.create_holds(_reserves([pending], alice, bob, 200), deps)
    clock.advance(20)
    assert await h.release_expired_holds(c.ReleaseExpiredHolds(100), deps) >= 1
    assert await ledger.balances(alice) == [(1000, 200)]
    outcomes = await h.resolve_holds(
        c.ResolveHolds((c.CancelHold(expired), c.CancelHold(pending))), deps
    )
    assert _summary(outcomes) == ["new", "new"]
    assert outcomes[0].result.hold.state is HoldState.EXPIRED
    assert outcomes[1].result.hold.state is HoldState.CANCELLED
    assert await ledger.balances(alice, bob) == [(1000, 0), (0, 0)]


@pytest.mark.parametrize("field", ["holds", "resolutions"])
async def test_a_batch_holds_one_to_a_thousand_items(ledger, deps, field):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 10_000)

    def batch(n: int) -> c.CreateHolds | c.ResolveHolds:
        if field == "holds":
            return _reserves([_branch() for _ in range(n)], alice, bob, 1)
        return c.ResolveHolds(tuple(c.CancelHold(_branch()) for _ in range(n)))

    call = h.create_holds if field == "holds" else h.resolve_holds
    for size in (0, MAX_BATCH + 1):
        with pytest.raises(HirepayError) as refused:
            await call(batch(size), deps)
        assert refused.value.reason == "VALIDATION_FAILED"
        assert field in refused.value.metadata
    outcomes = await call(batch(MAX_BATCH), deps)
    assert _summary(outcomes) == (["new"] if field == "holds" else ["null"]) * MAX_BATCH
    pending = MAX_BATCH if field == "holds" else 0
    assert await ledger.balances(alice) == [(10_000, pending)]


async def test_a_batch_costs_the_same_statements_whatever_its_size(ledger, deps, round_trips):
    """Issue 13: Trys of distinct branches that fit are ONE statement committing itself, and so
    are Confirms of the holds this process reserved; Confirms mixed with Cancels are a fixed
    number of statements in one transaction, the same for 4 items as for 40."""
    customer, contractor = await ledger.open("customer"), await ledger.open("contractor")
    await ledger.fund(customer, 100_000)
    await warm_refs(deps, customer, contractor)
    counts = []
    for size in (4, 40):
        branches = [_branch() for _ in range(size)]
        with round_trips:
            held = await h.create_holds(_reserves(branches, customer, contractor, 10), deps)
        assert _summary(held) == ["new"] * size
        assert len(round_trips.statements) == 1 and round_trips.transaction_control == []
        half = size // 2
        with round_trips:
            confirmed = await h.resolve_holds(
                c.ResolveHolds(tuple(c.ConfirmHold(b) for b in branches[:half])), deps
            )
        assert _summary(confirmed) == ["new"] * half
        assert len(round_trips.statements) == 1 and round_trips.transaction_control == []
        rest = branches[half:]
        mixed = [c.ConfirmHold(b) if i % 2 else c.CancelHold(b) for i, b in enumerate(rest)]
        with round_trips:
            resolved = await h.resolve_holds(c.ResolveHolds(tuple(mixed)), deps)
        assert _summary(resolved) == ["new"] * len(rest)
        assert round_trips.transaction_control == ["BEGIN;", "COMMIT;"]
        counts.append(len(round_trips.statements))
    assert counts[0] == counts[1] <= 7, counts
    confirmed_total = 2 * 10 + 1 * 10 + 20 * 10 + 10 * 10  # whole halves, then every odd one
    assert await ledger.balances(customer, contractor) == [
        (100_000 - confirmed_total, 0),
        (confirmed_total, 0),
    ]


async def test_concurrent_create_batches_never_overdraw(ledger, deps):
    """Four batches of ten Trys of 70 on 1000 at once: exactly what is affordable is held (14),
    each refused Try fails alone; then every hold is confirmed by concurrent resolve batches."""
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1000)
    batches = [[_branch() for _ in range(10)] for _ in range(4)]
    results = await asyncio.gather(
        *(h.create_holds(_reserves(b, alice, bob, 70), deps) for b in batches)
    )
    reasons = Counter(s for outcomes in results for s in _summary(outcomes))
    assert reasons == {"new": 14, "INSUFFICIENT_FUNDS": 26}  # 14 * 70 = 980 <= 1000 < 15 * 70
    assert await ledger.balances(alice, bob) == [(1000, 980), (0, 0)]
    held = [
        branch
        for branch_list, outcomes in zip(batches, results, strict=True)
        for branch, o in zip(branch_list, outcomes, strict=True)
        if o.error is None
    ]
    resolves = [c.ResolveHolds(tuple(c.ConfirmHold(b) for b in held[i::2])) for i in (0, 1)]
    done = await asyncio.gather(*(h.resolve_holds(r, deps) for r in resolves))
    assert [s for outcomes in done for s in _summary(outcomes)] == ["new"] * 14
    assert await ledger.balances(alice, bob) == [(20, 0), (980, 0)]


async def test_two_batches_racing_on_the_same_holds(ledger, deps, sessions):
    """Twin CreateHolds batches make each hold once (the other is answered as a replay); then a
    batch confirming every hold races a batch cancelling every hold: each hold resolves exactly
    once, by one of them, and the other's item is refused (HOLD_ALREADY_RESOLVED), leaving no
    barrier row of its own; every cent is where its hold's outcome put it."""
    customer, contractor = await ledger.open("customer"), await ledger.open("contractor")
    await ledger.fund(customer, 100_000)
    for round_ in range(4):
        branches = [_branch(f"r{round_}-") for _ in range(12)]
        batch = _reserves(branches, customer, contractor, 100)
        twins = await asyncio.gather(h.create_holds(batch, deps), h.create_holds(batch, deps))
        assert sorted(_summary(twins[0]) + _summary(twins[1])) == ["new"] * 12 + ["replayed"] * 12
        for one, other in zip(*twins, strict=True):
            assert one.result.hold == other.result.hold
        assert (await ledger.balance(customer)).pending == 1200
        confirms = c.ResolveHolds(tuple(c.ConfirmHold(b) for b in branches))
        cancels = c.ResolveHolds(tuple(c.CancelHold(b) for b in reversed(branches)))
        confirmed, cancelled = await asyncio.gather(
            h.resolve_holds(confirms, deps), h.resolve_holds(cancels, deps)
        )
        cancelled = cancelled[::-1]
        posted = 0
        for branch, by_confirm, by_cancel in zip(branches, confirmed, cancelled, strict=True):
            outcomes = sorted(_summary([by_confirm, by_cancel]))
            assert outcomes == ["HOLD_ALREADY_RESOLVED", "new"], outcomes
            ops = await barrier_rows(sessions, branch)
            if by_confirm.error is None:
                posted += 100
                assert ops == ["confirm", "try"]
            else:
                assert ops == ["cancel", "try"]
        balance = await ledger.balance(customer)
        assert balance.pending == 0
        ledger_total = await ledger.balances(contractor)
        assert ledger_total[0][0] == 100_000 - balance.posted
        assert posted <= 1200


async def test_cancel_batches_racing_create_batches_of_the_same_branches(ledger, deps):
    """A Cancel batch racing the Try batch of the same branches: per branch either the Cancel
    came first (null compensation; the Try is refused, nothing held) or the Try did (the Cancel
    releases it); nothing stays held."""
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 100_000)
    seen: Counter[str] = Counter()
    for _ in range(6):
        branches = [_branch() for _ in range(8)]
        tries, cancels = await asyncio.gather(
            h.create_holds(_reserves(branches, alice, bob, 100), deps),
            h.resolve_holds(c.ResolveHolds(tuple(c.CancelHold(b) for b in branches)), deps),
        )
        for by_try, by_cancel in zip(tries, cancels, strict=True):
            assert by_cancel.error is None  # a Cancel always succeeds
            if by_cancel.result.null_compensation:
                assert by_try.error.reason == "HOLD_CANCELLED"
                seen["cancel first"] += 1
            else:
                assert by_try.result.hold.state is HoldState.PENDING
                assert by_cancel.result.hold.state is HoldState.CANCELLED
                seen["try first"] += 1
        assert await ledger.balances(alice, bob) == [(100_000, 0), (0, 0)]
    assert sum(seen.values()) == 48


async def test_resolve_batches_racing_single_confirms_and_cancels(ledger, deps):
    """Single ConfirmHold and CancelHold calls racing a resolve batch of the same holds: each hold
    resolves once; a twin Confirm replays, the loser of a Confirm/Cancel race is refused."""
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 10_000)
    branches = [_branch() for _ in range(20)]
    await h.create_holds(_reserves(branches, alice, bob, 100), deps)

    async def single(i: int, branch: TccBranch) -> str:
        call = (
            h.confirm_hold(c.ConfirmHold(branch), deps)
            if i % 2
            else h.cancel_hold(c.CancelHold(branch), deps)
        )
        try:
            result = await call
        except HirepayError as exc:
            return exc.reason
        return "replayed" if result.replayed else "new"

    batch = c.ResolveHolds(tuple(c.ConfirmHold(b) for b in branches))
    batch_outcomes, *singles = await asyncio.gather(
        h.resolve_holds(batch, deps), *(single(i, b) for i, b in enumerate(branches))
    )
    posted = 0
    for i, (by_batch, by_single) in enumerate(zip(_summary(batch_outcomes), singles, strict=True)):
        if i % 2:  # two Confirms: one posts, the other replays it
            assert sorted([by_batch, by_single]) == ["new", "replayed"]
            posted += 100
        else:  # a Confirm against a Cancel: exactly one wins
            assert sorted([by_batch, by_single]) == ["HOLD_ALREADY_RESOLVED", "new"]
            posted += 100 if by_batch == "new" else 0
    assert await ledger.balances(alice, bob) == [(10_000 - posted, 0), (posted, 0)]


async def test_a_try_racing_its_cancel_in_a_batch_that_confirms_on_its_account(ledger, deps):
    """A mixed ResolveHolds - Confirms of holds on alice's account and the Cancel of a branch
    whose Try (on alice's account too) runs at the same time: either the Cancel came first (null
    compensation, the Try is refused) or the Try did (the Cancel releases it); the Confirms post;
    every balance exact."""
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 100_000)
    seen: Counter[str] = Counter()
    posted = 0
    for _ in range(10):
        held, racing = [_branch() for _ in range(3)], _branch()
        await h.create_holds(_reserves(held, alice, bob, 100), deps)
        mixed = c.ResolveHolds((*(c.ConfirmHold(b) for b in held), c.CancelHold(racing)))
        resolved, tried = await asyncio.gather(
            h.resolve_holds(mixed, deps),
            h.create_holds(_reserves([racing], alice, bob, 50), deps),
        )
        assert _summary(resolved)[:3] == ["new"] * 3
        posted += 300
        cancel, (by_try,) = resolved[3], tried
        if cancel.result.null_compensation:
            assert by_try.error.reason == "HOLD_CANCELLED"
            seen["cancel first"] += 1
        else:
            assert by_try.result.hold.state is HoldState.PENDING
            assert cancel.result.hold.state is HoldState.CANCELLED
            seen["try first"] += 1
        assert await ledger.balances(alice, bob) == [(100_000 - posted, 0), (posted, 0)]
    assert sum(seen.values()) == 10
