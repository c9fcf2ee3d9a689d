"""A checked batch of transfers split into several runs, on real PostgreSQL (issue 13, the shape
round 11's second wallet helper left unreproduced).

A batch with a repeated id (or a guarded debit of a sharded account) is posted checked, run by
run. Each run claimed its own ids and then changed its shards, so a later run's claims (and the
shards of a sharded account only a later run changes) were taken after an earlier run's shard
rows. A batch picks one shard per sharded account (1 in 16 that another picked the same), and a
single transfer picks its by its id. Against a twin of a later run's transfer on the same shard
(its claim first, then that shard), or another batch changing the same two shards in
(account, shard) order, each held what the other waited for: a deadlock, PostgreSQL aborting one
after deadlock_timeout. A checked batch now claims every id of the batch (id order) and locks
every shard it may change ((account, shard) order) in its first statement, after its account
rows, before any run: the rival waits for it, or it for the rival, never both.

Each test checks PostgreSQL's own deadlock count, how often each batch ran, every answer and the
balances."""

from __future__ import annotations

import asyncio
import types
import uuid
from collections import Counter

import pytest
from sqlalchemy import text

from tests.wallet.integration.lock_races import blocked_by, counting_uow, deadlocks
from wallet.domain import commands as c
from wallet.domain.ledger import Leg
from wallet.domain.model import AccountKind, shard_for
from wallet.service_layer import handlers as h
from wallet.service_layer.deps import Deps
from wallet.service_layer.handlers import batches

pytestmark = pytest.mark.usefixtures("sound")

# The key every batch of these tests picks its shards by (one shard per sharded account).
_KEY = uuid.UUID("00000000-0000-4000-8000-000000000001")


def _id_on_shard(prefix: str, shard: int, shards: int) -> str:
    """A transfer id whose single Transfer credits `shard` of a sharded account."""
    for n in range(10_000):
        candidate = f"{prefix}-{n}"
        if shard_for(candidate, shards) == shard:
            return candidate
    raise AssertionError("no id found")


async def _waiting_for(sessions, blocker: int, task: asyncio.Task) -> None:
    """Until `task` is done or some transaction waits for a lock `blocker` holds."""
    for _ in range(1000):
        if task.done():
            return
        async with sessions() as session:
            waiting = await session.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND :pid = ANY(pg_blocking_pids(pid))"
                ),
                {"pid": blocker},
            )
            if waiting.scalar_one():
                return
        await asyncio.sleep(0.01)
    raise AssertionError("the rival neither finished nor waited")


@pytest.mark.parametrize("rival", ["twin", "batch"])
async def test_a_later_run_takes_no_claim_or_shard_after_an_earlier_runs_shards(
    ledger, uow, clock, sessions, monkeypatch, rival
):
    """Sharded accounts low < mid < high (provider clearings, may go negative); every batch
    picks shard k of each. Batch A is (t1, t1, t0, t2): t1 mid -> high, t0 and t2 low -> mid,
    ids t1 < t0 < t2; the repeat of t1 splits it into runs (t1) and (t1, t0, t2). A test
    transaction holds t0's claim. Before the fix A's first run claimed t1 and locked shards k of
    mid and high, its second waited for t0. Then the rival: a twin of t2 (a single Transfer on
    shard k: claims t2, waits for mid's shard), or a batch B of one transfer low -> high (locks
    low's shard, waits for high's). t0 given back, A claimed it and waited for t2 (the twin's) or
    low's shard (B's): a deadlock. Now A claims t1, t0, t2 and locks its three shards before its
    runs: it waits for t0 holding t1 only; the rival goes first and commits; A then runs once:
    t1 posted, replayed, t0 posted, t2 replayed (the twin's) or posted."""
    low, mid, high = sorted(
        [
            await ledger.open(name, AccountKind.PROVIDER_CLEARING, neg=True)
            for name in ("c1", "c2", "c3")
        ]
    )
    async with uow() as u:
        shards = (await u.accounts.refs([low]))[low].shards
    k = shard_for(_KEY.hex, shards)
    monkeypatch.setattr(batches, "uuid", types.SimpleNamespace(uuid4=lambda: _KEY))
    prefix = f"cr-{uuid.uuid4().hex[:10]}"
    t1, t0 = f"{prefix}-1", f"{prefix}-2"
    t2 = _id_on_shard(f"{prefix}-3", k, shards)
    one = c.Transfer(t1, (Leg(mid, high, 1, "USD"),))
    zero = c.Transfer(t0, (Leg(low, mid, 20, "USD"),))
    two = c.Transfer(t2, (Leg(low, mid, 300, "USD"),))
    other = c.Transfer(f"{prefix}-4", (Leg(low, high, 4000, "USD"),))
    batch_a = c.CreateTransfers((one, one, zero, two))
    attempts: Counter[str] = Counter()
    before = await deadlocks(sessions)
    async with sessions() as holder:
        held = await holder.execute(
            text(
                "INSERT INTO transfers (id, kind, fingerprint) VALUES (:id, 'transfer', '{}')"
                " RETURNING pg_backend_pid()"
            ),
            {"id": t0},
        )
        blocker = held.scalar_one()
        first = asyncio.create_task(
            h.create_transfers(batch_a, Deps(uow=counting_uow(uow, attempts, "A"), clock=clock))
        )
        waiting = await blocked_by(sessions, {blocker}, set())  # A, for t0
        rival_deps = Deps(uow=counting_uow(uow, attempts, "rival"), clock=clock)
        if rival == "twin":
            second = asyncio.create_task(h.transfer(two, rival_deps))
        else:
            second = asyncio.create_task(
                h.create_transfers(c.CreateTransfers((other,)), rival_deps)
            )
        await _waiting_for(sessions, waiting, second)
        await holder.rollback()
        outcomes_a, answer = await asyncio.gather(first, second)
    assert await deadlocks(sessions) == before  # PostgreSQL detected no deadlock
    assert attempts == {"A": 1, "rival": 1}  # neither ran twice
    assert [o.error for o in outcomes_a] == [None] * 4
    replayed = [o.result.replayed for o in outcomes_a]
    if rival == "twin":
        assert not answer.replayed
        assert replayed == [False, True, False, True]
        assert await ledger.balances(low, mid, high) == [(-320, 0), (319, 0), (1, 0)]
    else:
        assert [o.error for o in answer] == [None]
        assert not answer[0].result.replayed
        assert replayed == [False, True, False, False]
        assert await ledger.balances(low, mid, high) == [(-4320, 0), (319, 0), (4001, 0)]
