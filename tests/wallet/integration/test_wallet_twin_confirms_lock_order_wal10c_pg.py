"""Twin Confirms (the same hold) in two groups at once, one on the one-statement path and one
checked, on real PostgreSQL (issue 13, gap (c) left by aac2445). The one statement locks the hold,
then the account rows, and inserts its barrier row last (only if everything applies); the checked
path inserted its barrier row first and then locked the hold. Twins meeting in between each waited
for the other (the hold's lock / the in-flight barrier row): a deadlock, PostgreSQL aborting one
after deadlock_timeout and its group run again. The checked path now locks the holds before it
inserts the barrier rows, as the one statement does: the later twin waits for the hold and then
finds the first's barrier row (a replay), and no group runs twice."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from sqlalchemy import text

from hirepay_platform.tcc import TccBranch
from tests.wallet.integration.test_wallet_grouped_holds_lock_order_wal10b_pg import (
    _blocked_by,
    _counted,
)
from wallet.domain import commands as c
from wallet.service_layer import handlers as h
from wallet.service_layer.deps import Deps

pytestmark = pytest.mark.usefixtures("sound")

FUNDS = 1_000_000


async def _deadlocks(sessions) -> int:
    async with sessions() as session:
        found = await session.execute(
            text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        )
        return int(found.scalar_one())


@pytest.mark.parametrize("twin_shape", ["repeated", "resolve_with_cancel"])
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
    before = await _deadlocks(sessions)

    def deps_of(name: str) -> Deps:
        return Deps(uow=_counted(uow, attempts, name), clock=clock)

    if twin_shape == "repeated":
        group_b = lambda d: h.confirm_holds([c.ConfirmHold(twin), c.ConfirmHold(twin)], d)  # noqa: E731
    else:
        batch = c.ResolveHolds((c.ConfirmHold(twin), c.CancelHold(other)))
        group_b = lambda d: h.resolve_holds(batch, d)  # noqa: E731
    async with sessions() as holder:
        held = await holder.execute(
            text("SELECT pg_backend_pid() FROM accounts WHERE id = :id FOR NO KEY UPDATE"),
            {"id": payer},
        )
        blocker = held.scalar_one()
        first = asyncio.create_task(h.confirm_holds([c.ConfirmHold(twin)], deps_of("A")))
        waiting = await _blocked_by(sessions, {blocker}, set())  # A, holding H, for the payer
        second = asyncio.create_task(group_b(deps_of("B")))
        await _blocked_by(sessions, {waiting}, {waiting})  # B, for H (or its barrier row)
        await holder.commit()
        outcomes_a, outcomes_b = await asyncio.gather(first, second)
    assert [o.error for o in outcomes_a] == [None]
    assert not outcomes_a[0].result.replayed
    assert all(o.error is None for o in outcomes_b), [o.error for o in outcomes_b]
    assert outcomes_b[0].result.replayed
    assert await _deadlocks(sessions) == before  # PostgreSQL detected no deadlock
    assert attempts == {"A": 1, "B": 1}  # no group ran twice
    cancelled = 0 if twin_shape == "repeated" else 5
    assert await ledger.balances(payer, payee) == [(FUNDS - 100, 5 - cancelled), (100, 0)]
