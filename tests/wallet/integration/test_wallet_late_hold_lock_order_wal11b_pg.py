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

Each test checks PostgreSQL's own deadlock count, how often each group ran, every call's outcome,
and the balances, hold states and barrier rows."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from sqlalchemy import text

from hirepay_platform.tcc import TccBranch
from tests.wallet.integration.conftest import barrier_rows
from tests.wallet.integration.test_wallet_crossed_resolutions_lock_order_wal11_pg import (
    _reasons,
    _states,
)
from tests.wallet.integration.test_wallet_grouped_holds_lock_order_wal10b_pg import (
    _blocked_by,
    _counted,
)
from tests.wallet.integration.test_wallet_twin_confirms_lock_order_wal10c_pg import _deadlocks
from wallet.domain import commands as c
from wallet.domain.ledger import Leg
from wallet.service_layer import handlers as h
from wallet.service_layer.deps import Deps
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
    assert _reasons(reserved) == ["ok"]
    attempts: Counter[str] = Counter()
    before = await _deadlocks(sessions)

    def deps_of(name: str) -> Deps:
        return Deps(uow=_counted(uow, attempts, name), clock=clock)

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
        held = await holder.execute(
            text("SELECT pg_backend_pid() FROM accounts WHERE id = :id FOR NO KEY UPDATE"),
            {"id": high},
        )
        blocker = held.scalar_one()
        first = asyncio.create_task(group_x(deps_of("X")))
        waiting = await _blocked_by(sessions, {blocker}, set())  # X, round 1, for `high`
        # T's Try, sent before the Confirms but slower: it commits now (`low` is free).
        tried = await h.reserve_holds([c.ReserveHold(t, low, payee, 100, "USD")], deps)
        assert _reasons(tried) == ["ok"]
        second = asyncio.create_task(rival_call(deps_of("Y")))
        # The rival, for `high` (behind X) or for T's Confirm barrier row (X's).
        await _blocked_by(sessions, {blocker, waiting}, {waiting})
        await holder.commit()
        outcomes_x, outcomes_y = await asyncio.gather(first, second)
    assert await _deadlocks(sessions) == before  # PostgreSQL detected no deadlock
    assert attempts == {"X": 2, "Y": 1}  # X gave its first run up at once; the rival ran once
    assert _reasons(outcomes_y) == ["ok"]
    assert not outcomes_y[0].result.replayed
    assert _reasons(outcomes_x) == ["ok", "ok", "ok"]
    # T confirmed once: by X's first Confirm of it, or by the twin (X's both replayed).
    assert [o.result.replayed for o in outcomes_x] == [False, rival == "twin_confirm", True]
    assert await _states(sessions, q, t) == ["confirmed", "confirmed"]
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
    counted = Deps(uow=_counted(uow, attempts, "X"), clock=clock)
    batch = c.ResolveHolds((c.ConfirmHold(t), c.ConfirmHold(q), c.ConfirmHold(t)))
    outcomes = await h.resolve_holds(batch, counted)
    assert _reasons(outcomes) == ["HOLD_NOT_FOUND", "ok", "HOLD_NOT_FOUND"]
    grouped = await h.confirm_holds([c.ConfirmHold(t), c.ConfirmHold(t)], counted)
    assert _reasons(grouped) == ["HOLD_NOT_FOUND", "HOLD_NOT_FOUND"]
    assert attempts == {"X": 2}  # one run each
    assert await barrier_rows(sessions, t) == []
    tried = await h.reserve_holds([c.ReserveHold(t, payer, payee, 100, "USD")], deps)
    assert _reasons(tried) == ["ok"]
    cancelled = await h.resolve_holds(c.ResolveHolds((c.CancelHold(t, "gave up"),)), deps)
    assert _reasons(cancelled) == ["ok"]
    assert await _states(sessions, q, t) == ["confirmed", "cancelled"]
    assert await ledger.balances(payer, payee) == [(FUNDS - 10, 0), (10, 0)]
