"""AuditLedger's incremental zero-sum check on real PostgreSQL (OPS-3, issue 13): with
`changed_since` it reads the transfers with an entry created since then (through the entries'
BRIN index on `created_at`), so the rows a round reads do not grow with the ledger's history; an
unbalanced transfer among them is found, an old one tampered with only by a full sweep, and a
transfer committed after a round, with an older time, by the next round's overlap."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from wallet.adapters.repositories import audit as audit_sql
from wallet.domain import commands as c
from wallet.domain.audit import FindingKind
from wallet.service_layer.handlers.audit import audit_ledger


async def _unbalanced(deps, since: datetime | None) -> set[str]:
    found = await audit_ledger(c.AuditLedger(hold_grace_seconds=60, changed_since=since), deps)
    return {f.subject_id for f in found if f.kind is FindingKind.UNBALANCED_TRANSACTION}


async def _history(engine: AsyncEngine, a: str, b: str, n: int, at: datetime) -> None:
    """`n` balanced transfers of two entries each, written at `at` (straight into the tables:
    quicker than n transfers through the handler, and the same rows)."""
    tag = uuid.uuid4().hex[:8]
    async with engine.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        params = {"tag": tag, "n": n, "at": at, "a": a, "b": b}
        await conn.execute(
            text(
                "INSERT INTO transfers (id, kind, fingerprint, created_at)"
                " SELECT 'h-' || :tag || '-' || g, 'transfer', '{}', :at"
                " FROM generate_series(1, :n) g"
            ),
            params,
        )
        await conn.execute(
            text(
                "INSERT INTO entries (transfer_id, account_id, unit, amount, created_at)"
                " SELECT 'h-' || :tag || '-' || g, CAST(s.acct AS uuid), 'USD', s.amount, :at"
                " FROM generate_series(1, :n) g,"
                " (VALUES (:a, -1), (:b, 1)) AS s(acct, amount)"
            ),
            params,
        )
        # What autosummarize does within autovacuum's naptime on a running ledger.
        await conn.execute(text("SELECT brin_summarize_new_values('ix_entries_created_brin')"))
        await conn.execute(text("ANALYZE entries"))


async def _unbalanced_transfer(conn: Any, account: str) -> str:
    """One transfer of a single entry (past the commit-time zero-sum trigger: replica role)."""
    transfer = f"bad-{uuid.uuid4().hex[:8]}"
    await conn.execute(text("SET LOCAL session_replication_role = replica"))
    await conn.execute(
        text("INSERT INTO transfers (id, kind, fingerprint) VALUES (:id, 'transfer', '{}')"),
        {"id": transfer},
    )
    await conn.execute(
        text(
            "INSERT INTO entries (transfer_id, account_id, unit, amount) VALUES (:t, :a, 'USD', 5)"
        ),
        {"t": transfer, "a": account},
    )
    return transfer


async def _remove(engine: AsyncEngine, *transfers: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        for t in transfers:
            await conn.execute(text("DELETE FROM entries WHERE transfer_id = :t"), {"t": t})
            await conn.execute(text("DELETE FROM transfers WHERE id = :t"), {"t": t})


def _entries_scanned(plan: dict[str, Any]) -> int:
    """Rows of `entries` a plan read: returned, filtered out and rechecked away, per loop."""
    own = 0
    if plan.get("Relation Name") == "entries":
        read = plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0)
        read += plan.get("Rows Removed by Index Recheck", 0)
        own = read * plan["Actual Loops"]
    return own + sum(_entries_scanned(p) for p in plan.get("Plans", []))


async def _scanned(engine: AsyncEngine, since: datetime | None) -> int:
    statement = audit_sql._UNBALANCED if since is None else audit_sql._UNBALANCED_SINCE
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement.text}"),
            {"since": since, "limit": 1000},
        )
        plan = rows.scalar_one()
    return _entries_scanned((plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"])


async def test_a_rounds_rows_read_do_not_grow_with_history(ledger, deps, engine, round_trips):
    a, b = await ledger.open("alice"), await ledger.open("bob")
    long_ago = datetime.now(UTC) - timedelta(days=30)
    figures: list[tuple[int, int, int]] = []
    for history in (1_000, 100_000):
        await _history(engine, a, b, history, long_ago)
        since = datetime.now(UTC)  # the previous round's start, less the overlap
        await _history(engine, a, b, 50, datetime.now(UTC))  # this round's window: 50 new
        with round_trips:
            assert await _unbalanced(deps, since) == set()
        statements = len(round_trips.statements)
        figures.append((statements, await _scanned(engine, since), await _scanned(engine, None)))
    (statements_small, window_small, full_small), (statements_large, window_large, full_large) = (
        figures
    )
    print(
        f"entries read per round (history 2k/202k entries): window {window_small}/{window_large}"
        f", full {full_small}/{full_large}; statements {statements_small}/{statements_large}"
    )
    assert statements_small == statements_large == 3  # zero sums, limits, expired holds
    assert full_large - full_small >= 2 * 100_000  # a full sweep reads every entry
    # A window reads its own 100 entries twice (to find its transfers, then their sums) and the
    # rest of the BRIN ranges they are in (32 pages, ~2,800 entries each), not the history.
    assert window_small <= 3 * 2_816
    assert window_large <= 3 * 2_816


async def test_new_rows_are_checked_by_a_window_and_old_ones_by_a_full_sweep(ledger, deps, engine):
    a = await ledger.open("carol")
    round_at = datetime.now(UTC)
    async with engine.begin() as conn:
        new = await _unbalanced_transfer(conn, a)
    assert new in await _unbalanced(deps, round_at - timedelta(seconds=5))
    # Tampered with: an old balanced transfer's entry changed in SQL, its time left as it was.
    b = await ledger.open("dave")
    await _history(engine, a, b, 1, datetime.now(UTC) - timedelta(days=30))
    async with engine.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        old = await conn.scalar(
            text(
                "UPDATE entries SET amount = amount + 1 WHERE id = (SELECT max(id) FROM entries"
                " WHERE account_id = :b) RETURNING transfer_id"
            ),
            {"b": b},
        )
    window = await _unbalanced(deps, datetime.now(UTC) - timedelta(seconds=60))
    assert old not in window
    assert {new, old} <= await _unbalanced(deps, None)
    await _remove(engine, new, old)
    assert await _unbalanced(deps, None) == set()


async def test_a_transfer_committed_after_a_round_with_an_older_time_is_not_skipped(
    ledger, deps, engine
):
    """`created_at` is the writing transaction's start: a transaction begun before a round and
    committed after it has rows older than that round. The next round reads from the round's
    start minus the overlap, so it sees them; from the round's start alone it would not."""
    a = await ledger.open("erin")
    async with engine.connect() as slow:
        await slow.begin()
        transfer = await _unbalanced_transfer(slow, a)  # created_at: this transaction's start
        await asyncio.sleep(0.2)
        round_at = datetime.now(UTC)
        assert transfer not in await _unbalanced(deps, round_at - timedelta(seconds=60))
        await slow.commit()  # committed after the round read its window
    overlap = timedelta(seconds=5)
    assert transfer in await _unbalanced(deps, round_at - overlap)
    assert transfer not in await _unbalanced(deps, round_at)  # why the overlap
    await _remove(engine, transfer)
