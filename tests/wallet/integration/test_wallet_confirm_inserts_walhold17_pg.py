"""What a group of Reserves and a group of Confirms cost PostgreSQL in their one statement, and that
they insert their barrier rows (and claim the Confirms' transfer ids) without speculative
insertion (issue 13, walhold17).

The one-statement groups inserted with ON CONFLICT DO NOTHING: a speculative insertion probes the
key's index before its insert and writes a third WAL record per row to confirm it; the Confirm
group also read each branch's Confirm barrier row first (a LATERAL read). A pending hold's branch
has no Confirm barrier row and its Confirm's transfer id is untaken (a refused Confirm deletes its
row; "/" keeps the id apart from every client's), so the Confirm group reads neither and inserts
both plainly, the barrier's or the transfers' key refusing the impossible twin: the statement then
writes nothing and the group runs checked. The Reserve group reads each barrier row by its key and
inserts the others plainly (a replay is still answered from its row in the one statement). Per call
in groups of 32 (EXPLAIN ANALYZE of the group's statement, PostgreSQL 16): Reserve 17.3 -> 16.3
buffer hits and 8.06 -> 7.06 WAL records, Confirm 57.9 -> 50.3 and 24.1 -> 22.1."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect

from hirepay_dev.pg import libpq_url
from hirepay_platform.tcc import TccBranch
from tests.support.pg_plans import generic_plan
from tests.wallet.integration.conftest import barrier_rows, warm_refs
from wallet.adapters.repositories import holds as holds_repo
from wallet.domain import commands as c
from wallet.domain.holds import confirm_transfer_id
from wallet.service_layer.batcher import HoldBatchers

pytestmark = pytest.mark.usefixtures("sound")

GROUP = 32


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in _nodes(child))]


async def _reserved(ledger, deps) -> tuple[HoldBatchers, list[TccBranch], list[str], list[str]]:
    """GROUP holds reserved through the batchers (the first call alone, then the others in one
    group), each its own payer and payee."""
    payers = [await ledger.open(f"payer{i}") for i in range(GROUP)]
    payees = [await ledger.open(f"payee{i}") for i in range(GROUP)]
    for payer in payers:
        await ledger.fund(payer, 10_000)
    await warm_refs(deps, *payers, *payees)  # as on a running wallet
    holds = HoldBatchers(deps, max_items=GROUP)
    branches = [TccBranch(f"ci-{uuid.uuid4().hex}", "payment") for _ in range(GROUP)]
    reserves = [
        c.ReserveHold(b, payer, payee, 100, "USD")
        for b, payer, payee in zip(branches, payers, payees, strict=True)
    ]
    first = asyncio.ensure_future(holds.reserve.call(reserves[0]))
    await asyncio.sleep(0)
    held = [await first, *await asyncio.gather(*(holds.reserve.call(r) for r in reserves[1:]))]
    assert [h.replayed for h in held] == [False] * GROUP
    return holds, branches, payers, payees


async def test_groups_of_reserves_and_confirms_insert_plainly_within_their_counts(
    ledger, deps, sessions, monkeypatch
):
    """GROUP Reserves then their Confirms, each group's one statement run once more under
    EXPLAIN (ANALYZE, BUFFERS, WAL) in a transaction rolled back just before it runs: no
    speculative insertion; the Reserves' reads each branch's barrier row by its key, the
    Confirms' reads none; each within its buffer hits and WAL records per call."""
    plans: list[dict[str, Any]] = []
    execute_alone = holds_repo.execute_alone

    async def explained(session, statement, params):
        async with sessions() as other, other.begin():
            plan = (
                await other.execute(
                    text(f"EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) {statement.statement}"),
                    dict(params),
                )
            ).scalar_one()
            await other.rollback()
        plans.append((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])
        return await execute_alone(session, statement, params)

    monkeypatch.setattr(holds_repo, "execute_alone", explained)
    holds, branches, payers, payees = await _reserved(ledger, deps)
    assert len(plans) == 2  # the first call's group, then the others'
    reserve = plans[-1]
    nodes = _nodes(reserve)
    barrier = [n for n in nodes if n.get("Relation Name") == "tcc_barriers"]
    assert [n["Node Type"] for n in barrier] == ["ModifyTable", "Index Only Scan"], barrier
    inserts = [n for n in nodes if n.get("Operation") == "Insert"]
    assert {n["Relation Name"] for n in inserts} == {"holds", "tcc_barriers"}
    assert [n for n in inserts if "Conflict Resolution" in n] == []
    calls = GROUP - 1
    # 17.3 buffer hits and 8.06 WAL records per Reserve before; ~16.3 and ~7.06 now.
    assert reserve["Shared Hit Blocks"] <= 16.8 * calls, reserve["Shared Hit Blocks"] / calls
    assert reserve["WAL Records"] <= 7.3 * calls, reserve["WAL Records"] / calls
    plans.clear()
    # The first call goes alone at once, the others gather behind it: wait for it to start.
    first = asyncio.ensure_future(holds.confirm.call(c.ConfirmHold(branches[0])))
    await asyncio.sleep(0)
    rest = [holds.confirm.call(c.ConfirmHold(b)) for b in branches[1:]]
    confirmed = [await first, *await asyncio.gather(*rest)]
    assert [r.replayed for r in confirmed] == [False] * GROUP
    assert len(plans) == 2  # the first call's group, then the others'
    group = plans[-1]
    nodes = _nodes(group)
    saved = [n for n in nodes if n.get("Relation Name") == "holds" and n.get("Operation")]
    assert [n["Actual Rows"] for n in saved] == [calls]
    reads = [n for n in nodes if n.get("Relation Name") == "tcc_barriers"]
    assert [n["Node Type"] for n in reads] == ["ModifyTable"], reads  # written, never read
    inserts = [n for n in nodes if n.get("Operation") == "Insert"]
    assert {n["Relation Name"] for n in inserts} == {"transfers", "entries", "tcc_barriers"}
    assert [n for n in inserts if "Conflict Resolution" in n] == []
    # 57.9 buffer hits and 24.1 WAL records per Confirm before; ~50.3 and ~22.1 now.
    assert group["Shared Hit Blocks"] <= 52 * calls, group["Shared Hit Blocks"] / calls
    assert group["WAL Records"] <= 22.6 * calls, group["WAL Records"] / calls
    assert await ledger.balances(payers[1], payees[1]) == [(9_900, 0), (100, 0)]
    assert await barrier_rows(sessions, branches[1]) == ["confirm", "try"]


async def test_a_confirm_whose_barrier_row_is_there_runs_checked(ledger, deps, sessions):
    """A branch with a Confirm barrier row while its hold is still pending (never left by the
    wallet: a refused Confirm deletes its row; written here by hand) fails the group's one
    statement on the barrier's key: nothing of it is written, and the group runs checked, where
    that Confirm is answered from its barrier row (a replay of a Confirm that posted nothing
    fails its fingerprint or finds no transfer) and the others are confirmed."""
    holds, branches, payers, payees = await _reserved(ledger, deps)
    taken = branches[0]
    async with sessions() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO tcc_barriers (global_tx_id, branch_id, op, origin, fingerprint)"
                " VALUES (:g, :b, 'confirm', 'confirm', '{}')"
            ),
            {"g": taken.global_tx_id, "b": taken.branch_id},
        )
    first = asyncio.ensure_future(holds.confirm.call(c.ConfirmHold(branches[1])))
    await asyncio.sleep(0)
    others = [holds.confirm.call(c.ConfirmHold(b)) for b in branches[2:]]
    answers = await asyncio.gather(
        first, holds.confirm.call(c.ConfirmHold(taken)), *others, return_exceptions=True
    )
    assert [getattr(a, "replayed", None) for a in answers[2:]] == [False] * (GROUP - 2)
    assert getattr(answers[0], "replayed", None) is False
    async with sessions() as session:
        transfer = await session.execute(
            text("SELECT count(*) FROM transfers WHERE id = :id"),
            {"id": confirm_transfer_id(taken)},
        )
        assert transfer.scalar_one() == 0
    assert await ledger.balances(payers[0], payers[2], payees[2]) == [
        (10_000, 100),
        (9_900, 0),
        (100, 0),
    ]


async def test_a_reserve_group_reads_each_barrier_row_by_its_key_on_a_fresh_database(
    make_service_database: Callable[[str], str],
):
    """The Reserves' read of their barrier rows is one index probe per branch in the generic
    plan a connection makes while the tables look tiny (a new wallet's) and then keeps: as a
    join it could hash the group against every barrier row ever written, on each call."""
    connection = await asyncpg.connect(libpq_url(make_service_database("wallet")))
    try:
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        plan = await generic_plan(connection, _positional(holds_repo._RESERVE_ALONE))
    finally:
        await connection.close()
    entered = plan[plan.index("CTE entered") : plan.index("CTE locked")]
    assert "Index Only Scan using pk_tcc_barriers" in entered, plan
    assert "Seq Scan on tcc_barriers" not in entered and "Conflict" not in entered, plan


def _positional(statement: Any) -> str:
    """A hot statement's SQL with $n parameters, as asyncpg is sent it."""
    return str(statement.statement.compile(dialect=asyncpg_dialect.dialect()))
