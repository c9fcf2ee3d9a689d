"""Holds on real PostgreSQL: Reserve / Confirm / Cancel under the TCC barrier, and expiry."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from hirepay_platform.tcc import IdempotencyMismatch, TccBranch
from tests.support.pg_plans import generic_plan, planning
from wallet.adapters.tables import HOLD_IS_PENDING
from wallet.domain import commands as c
from wallet.domain.errors import (
    HoldAlreadyResolved,
    HoldCancelled,
    HoldExpired,
    InsufficientFunds,
)
from wallet.domain.holds import HoldState
from wallet.domain.ledger import Leg
from wallet.domain.model import AccountKind
from wallet.domain.splits import Share
from wallet.service_layer import handlers as h

pytestmark = pytest.mark.usefixtures("sound")


def _branch() -> TccBranch:
    return TccBranch(f"saga-{uuid.uuid4().hex[:12]}", "payment")


async def test_reserve_then_partial_confirm_with_fee_split(ledger, deps):
    customer, contractor = await ledger.open("customer"), await ledger.open("contractor")
    revenue = await ledger.open("platform", AccountKind.PLATFORM_REVENUE)
    await ledger.fund(customer, 10_000)
    branch = _branch()
    reserve = c.ReserveHold(branch, customer, contractor, 5000, "USD", 300, "offer 7")
    held = await h.reserve_hold(reserve, deps)
    assert held.hold.state is HoldState.PENDING
    assert await ledger.balances(customer) == [(10_000, 5000)]
    assert (await ledger.balance(customer)).available == 5000
    shares = (Share(revenue, 1000), Share(contractor, 9000))
    confirm = c.ConfirmHold(branch, 4001, shares, contractor)
    done = await h.confirm_hold(confirm, deps)
    assert (done.hold.state, done.hold.confirmed_amount) == (HoldState.CONFIRMED, 4001)
    # 10% fee floor(400.1)=400, 90% floor(3600.9)=3600, remainder 1 to the contractor
    assert await ledger.balances(customer, revenue, contractor) == [(5999, 0), (400, 0), (3601, 0)]
    repeat = await h.confirm_hold(confirm, deps)
    assert repeat.replayed and repeat.transfer == done.transfer
    fetched = await h.get_hold(c.GetHold(branch), deps)
    assert fetched.hold == done.hold and fetched.transfer == done.transfer
    with pytest.raises(HoldAlreadyResolved):
        await h.cancel_hold(c.CancelHold(branch), deps)


async def test_reserve_is_idempotent_and_refuses_a_changed_repeat(ledger, deps):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1000)
    branch = _branch()
    reserve = c.ReserveHold(branch, alice, bob, 700, "USD")
    first = await h.reserve_hold(reserve, deps)
    again = await h.reserve_hold(reserve, deps)
    assert again.replayed and again.hold == first.hold
    changed = c.ReserveHold(branch, alice, bob, 701, "USD")
    with pytest.raises(IdempotencyMismatch) as caught:
        await h.reserve_hold(changed, deps)
    assert caught.value.metadata["field"] == "amount"
    assert await ledger.balances(alice) == [(1000, 700)]
    # the held 700 is not available to anyone else
    with pytest.raises(InsufficientFunds):
        await h.transfer(c.Transfer(f"t-{ledger.tag}", (Leg(alice, bob, 301, "USD"),)), deps)
    with pytest.raises(InsufficientFunds):
        await h.reserve_hold(c.ReserveHold(_branch(), alice, bob, 301, "USD"), deps)


async def test_cancel_releases_once(ledger, deps):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1000)
    branch = _branch()
    await h.reserve_hold(c.ReserveHold(branch, alice, bob, 400, "USD"), deps)
    cancelled = await h.cancel_hold(c.CancelHold(branch, "offer rejected"), deps)
    assert cancelled.hold.state is HoldState.CANCELLED and not cancelled.replayed
    repeat = await h.cancel_hold(c.CancelHold(branch), deps)
    assert repeat.replayed and repeat.hold.state is HoldState.CANCELLED
    with pytest.raises(HoldAlreadyResolved):
        await h.confirm_hold(c.ConfirmHold(branch), deps)
    assert await ledger.balances(alice, bob) == [(1000, 0), (0, 0)]


async def test_null_compensation_and_hanging_try(ledger, deps):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1000)
    branch = _branch()
    early = await h.cancel_hold(c.CancelHold(branch, "saga timed out"), deps)
    assert early.null_compensation and early.hold is None and not early.replayed
    with pytest.raises(HoldCancelled):
        await h.reserve_hold(c.ReserveHold(branch, alice, bob, 400, "USD"), deps)
    assert await ledger.balances(alice) == [(1000, 0)]
    repeat = await h.cancel_hold(c.CancelHold(branch), deps)
    assert repeat.null_compensation and repeat.replayed


async def test_a_failed_try_can_be_cancelled_and_then_never_reserves(ledger, deps):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    branch = _branch()
    with pytest.raises(InsufficientFunds):  # the Try failed: nothing recorded for it
        await h.reserve_hold(c.ReserveHold(branch, alice, bob, 400, "USD"), deps)
    assert (await h.cancel_hold(c.CancelHold(branch), deps)).null_compensation
    await ledger.fund(alice, 1000)
    with pytest.raises(HoldCancelled):
        await h.reserve_hold(c.ReserveHold(branch, alice, bob, 400, "USD"), deps)
    assert await ledger.balances(alice) == [(1000, 0)]


async def test_expiry_worker_releases_expired_holds_only(ledger, deps, clock):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1000)
    short, long_ = _branch(), _branch()
    await h.reserve_hold(c.ReserveHold(short, alice, bob, 100, "USD", 60), deps)
    await h.reserve_hold(c.ReserveHold(long_, alice, bob, 200, "USD", 3600), deps)
    clock.advance(61)
    with pytest.raises(HoldExpired):
        await h.confirm_hold(c.ConfirmHold(short), deps)
    released = 0
    while n := await h.release_expired_holds(c.ReleaseExpiredHolds(batch_size=50), deps):
        released += n
    assert released >= 1
    assert (await h.get_hold(c.GetHold(short), deps)).hold.state is HoldState.EXPIRED
    assert (await h.get_hold(c.GetHold(long_), deps)).hold.state is HoldState.PENDING
    assert await ledger.balances(alice) == [(1000, 200)]
    late_cancel = await h.cancel_hold(c.CancelHold(short), deps)
    assert late_cancel.hold.state is HoldState.EXPIRED
    assert await ledger.balances(alice) == [(1000, 200)]


async def test_concurrent_expiry_workers_release_each_hold_exactly_once(
    ledger, deps, clock, engine
):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 10_000)
    branches = [_branch() for _ in range(60)]
    for branch in branches:
        await h.reserve_hold(c.ReserveHold(branch, alice, bob, 10, "USD", 30), deps)
    clock.advance(31)

    async def worker() -> int:
        total = 0
        while n := await h.release_expired_holds(c.ReleaseExpiredHolds(batch_size=7), deps):
            total += n
        return total

    counts = await asyncio.gather(*(worker() for _ in range(4)))
    assert sum(counts) >= len(branches)  # other tests' holds may expire here too
    assert await ledger.balances(alice) == [(10_000, 0)]
    async with engine.connect() as db:
        states = await db.execute(
            text("SELECT state, count(*) FROM holds WHERE account_id = :a GROUP BY state"),
            {"a": alice},
        )
        assert dict(states.all()) == {"expired": 60}


def test_the_pending_hold_condition_names_the_pending_state() -> None:
    assert HOLD_IS_PENDING.text == f"state = '{HoldState.PENDING.value}'"


async def test_the_expiry_worker_leases_pending_holds_through_their_index(
    wallet_db_url, uow, round_trips
):
    """The expiry worker's lease runs every round; with its state bound as a parameter its
    generic plan could not use the partial `ix_holds_pending_expiry` and read every hold ever
    made (issue 13)."""
    round_trips.sent.clear()
    async with uow() as work:
        await work.holds.lock_expired(datetime.now(UTC), 50)
    lease = next(sql for _, sql in round_trips.sent if "FROM holds" in sql)
    async with planning(wallet_db_url) as connection:
        plan = await generic_plan(connection, lease)
    assert "ix_holds_pending_expiry" in plan and "Seq Scan on holds" not in plan, plan
