"""The order in which a batch of transfers claims its ids, on real PostgreSQL (issue 13, found by
the audit of round 11's second wallet helper).

A transfer between sharded accounts only (provider clearing, which may go negative, to platform
revenue) locks no account row: its first lock is its claim of its id (insert-first on the
transfers' key), and a batch claimed its ids in the order of its items. Two batches in flight
with two of the same ids (retries of transfers racing their first attempts, listed in other
orders) each claimed one and waited for the other's: a deadlock, PostgreSQL aborting one and its
batch run again. Every run now claims its ids in id order, the one order: the later batch waits
at the first id they share, holding none of the others."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from sqlalchemy import text

from tests.wallet.integration.lock_races import blocked_by, counting_uow, deadlocks
from wallet.domain import commands as c
from wallet.domain.ledger import Leg
from wallet.domain.model import AccountKind
from wallet.service_layer import handlers as h
from wallet.service_layer.deps import Deps

pytestmark = pytest.mark.usefixtures("sound")


@pytest.mark.parametrize("path", ["one_statement", "checked"])
async def test_two_batches_claiming_the_same_ids_in_other_orders_do_not_deadlock(
    ledger, uow, clock, sessions, path
):
    """Ids x < y < z. A test transaction has claimed z (not committed). Batch 2 (y, z, x) claimed
    y and waits for z; batch 1 (x, y) claimed x and waited for y (batch 2's). z given back,
    batch 2 claimed it and went on to x, batch 1's: before the fix a deadlock. Now batch 2 claims
    x and y before it waits for z, batch 1 waits for batch 2 at x, and each runs once: batch 2
    posts all three, batch 1 replays both; the balances are exact. Batch 2 is one statement
    (post_run), or checked (a repeat of y at its end: its first run claims through
    CLAIM_AND_LOCK, the repeat is replayed)."""
    clearing = await ledger.open("clearing", AccountKind.PROVIDER_CLEARING, neg=True)
    revenue = await ledger.open("revenue", AccountKind.PLATFORM_REVENUE)
    prefix = f"co-{uuid.uuid4().hex[:10]}"
    x, y, z = (f"{prefix}-{k}" for k in ("1x", "2y", "3z"))
    amounts = {x: 1, y: 20, z: 300}

    def transfer(transfer_id: str) -> c.Transfer:
        return c.Transfer(transfer_id, (Leg(clearing, revenue, amounts[transfer_id], "USD"),))

    attempts: Counter[str] = Counter()
    before = await deadlocks(sessions)

    def deps_of(name: str) -> Deps:
        return Deps(uow=counting_uow(uow, attempts, name), clock=clock)

    batch1 = c.CreateTransfers((transfer(x), transfer(y)))
    repeat = (transfer(y),) if path == "checked" else ()
    batch2 = c.CreateTransfers((transfer(y), transfer(z), transfer(x), *repeat))
    async with sessions() as holder:
        held = await holder.execute(
            text(
                "INSERT INTO transfers (id, kind, fingerprint) VALUES (:id, 'transfer', '{}')"
                " RETURNING pg_backend_pid()"
            ),
            {"id": z},
        )
        blocker = held.scalar_one()
        second = asyncio.create_task(h.create_transfers(batch2, deps_of("2")))
        waiting = await blocked_by(sessions, {blocker}, set())  # batch 2, for z
        first = asyncio.create_task(h.create_transfers(batch1, deps_of("1")))
        await blocked_by(sessions, {waiting}, {waiting})  # batch 1, for an id batch 2 claimed
        await holder.rollback()
        outcomes2, outcomes1 = await asyncio.gather(second, first)
    assert await deadlocks(sessions) == before  # PostgreSQL detected no deadlock
    assert attempts == {"1": 1, "2": 1}  # neither batch ran twice
    assert [o.error for o in outcomes2] == [None] * (3 + len(repeat))
    assert [o.result.replayed for o in outcomes2] == [False] * 3 + [True] * len(repeat)
    assert [o.error for o in outcomes1] == [None] * 2
    assert all(o.result.replayed for o in outcomes1)
    assert await ledger.balances(clearing, revenue) == [(-321, 0), (321, 0)]
