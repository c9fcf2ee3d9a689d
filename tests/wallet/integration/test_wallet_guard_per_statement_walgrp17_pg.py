"""The commit-time guard checks a group's transfers with its statement, in one query (migration
0010, issue 13): a group of 32 Transfer calls is one statement writing 32 transfers, and COMMIT's
deferred firings (one per entry) ran the guard's query once per transfer - 32 queries, each
reading the transfer's entries, their accounts and the transfer's row. Now the statement's own
trigger checks them all at once and COMMIT finds every entry checked: it reads no table at all.
What the guard refuses is refused as before, at COMMIT, with the same errors; a transfer written
over several statements still balances only at COMMIT."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from wallet.adapters.repositories import ledger_sql as sql
from wallet.adapters.repositories.ledger import run_params
from wallet.domain import commands as c
from wallet.domain.ledger import Leg, entries_for_legs, plan_posting
from wallet.service_layer.handlers.transfers import transfer_header

pytestmark = pytest.mark.usefixtures("sound")

GROUP = 32
_TABLES = ("accounts", "entries", "transfers")
# Reads of the ledger's tables by this transaction so far (index and sequential scans), read as
# they are at each read (stats_fetch_consistency = none).
_SCANS = text(
    "SELECT coalesce(sum(idx_scan), 0) + coalesce(sum(seq_scan), 0)"
    " FROM pg_stat_xact_user_tables WHERE relname = ANY(CAST(:tables AS text[]))"
)


async def _group(ledger, deps) -> tuple[list[str], list[str], list[tuple[object, object]]]:
    """GROUP transfers of 100, each its own payer and payee, planned as one group (POST_RUN)."""
    payers = [await ledger.open(f"payer{i}") for i in range(GROUP)]
    payees = [await ledger.open(f"payee{i}") for i in range(GROUP)]
    for payer in payers:
        await ledger.fund(payer, 1000)
    async with deps.uow() as uow:
        refs = await uow.accounts.refs({*payers, *payees})
    items = []
    for payer, payee in zip(payers, payees, strict=True):
        header, legs = transfer_header(
            c.Transfer(f"grp-{uuid.uuid4().hex}", (Leg(payer, payee, 100, "USD"),))
        )
        items.append((header, plan_posting("k", entries_for_legs(legs, refs), refs)))
    return payers, payees, items


async def _scans(conn) -> int:
    return (await conn.execute(_SCANS, {"tables": list(_TABLES)})).scalar_one()


async def test_commit_reads_nothing_after_a_group_of_transfers(ledger, deps, engine):
    """The deferred guard at COMMIT reads none of the ledger's tables after a group's statement
    (before 0010: 96, three reads per transfer - its entries, its accounts, its row)."""
    payers, payees, items = await _group(ledger, deps)
    async with engine.connect() as conn:
        await conn.execute(text("SET LOCAL stats_fetch_consistency = 'none'"))
        before = await _scans(conn)
        row = (await conn.execute(sql.POST_RUN_NO_SHARDS, run_params(items))).one()
        assert row.ok and len(row.entry_ids) == 2 * GROUP
        written = await _scans(conn)
        await conn.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))  # the deferred guard runs now
        assert await _scans(conn) - written == 0
        assert written > before  # (the counters count: the claims' probes at least)
        await conn.commit()
    assert await ledger.balances(payers[0], payees[0]) == [(900, 0), (100, 0)]


async def test_a_bad_transfer_in_a_group_still_fails_the_commit(ledger, sessions):
    """A statement writing two transfers, one of them in another unit than its accounts': the good
    one is remembered as checked, the bad one is not, and COMMIT refuses it with the guard's
    error (nothing committed)."""
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    good, bad = f"good-{ledger.tag}", f"bad-{ledger.tag}"
    async with sessions() as session:
        await session.execute(
            text(
                "INSERT INTO transfers (id, kind, fingerprint)"
                " VALUES (:g, 'transfer', '{}'), (:b, 'transfer', '{}')"
            ),
            {"g": good, "b": bad},
        )
        await session.execute(
            text(
                "INSERT INTO entries (transfer_id, account_id, unit, amount) VALUES"
                " (:g, :a, 'USD', -5), (:g, :b, 'USD', 5), (:t, :a, 'EUR', -5), (:t, :b, 'EUR', 5)"
            ),
            {"g": good, "t": bad, "a": alice, "b": bob},
        )
        with pytest.raises(IntegrityError, match="not in the unit of account"):
            await session.commit()
    async with sessions() as session:
        found = await session.execute(
            text("SELECT count(*) FROM transfers WHERE id IN (:g, :b)"), {"g": good, "b": bad}
        )
        assert found.scalar_one() == 0


async def test_a_transfer_completed_by_a_later_statement_commits(ledger, sessions):
    """A transfer whose statement leaves it unbalanced is not refused then (the check belongs to
    COMMIT): a later statement completes it and the transaction commits."""
    alice, bob = await ledger.open("alice", neg=True), await ledger.open("bob")
    transfer_id = f"split-{ledger.tag}"
    entry = text(
        "INSERT INTO entries (transfer_id, account_id, unit, amount) VALUES (:t, :a, 'USD', :m)"
    )
    move = text("UPDATE accounts SET posted = posted + :m WHERE id = :a")
    async with sessions() as session:
        await session.execute(
            text("INSERT INTO transfers (id, kind, fingerprint) VALUES (:t, 'transfer', '{}')"),
            {"t": transfer_id},
        )
        for account, amount in ((alice, -7), (bob, 7)):
            await session.execute(entry, {"t": transfer_id, "a": account, "m": amount})
            await session.execute(move, {"a": account, "m": amount})  # balances = their entries
        await session.commit()
    assert await ledger.balances(alice, bob) == [(-7, 0), (7, 0)]


async def test_the_memory_is_the_statements_and_ends_with_the_transaction(ledger, deps, engine):
    """The checked entries' ids are a transaction-local setting: set by the group's statement,
    gone after its COMMIT (a later transaction's entries are never taken for checked)."""
    _, _, items = await _group(ledger, deps)
    async with engine.connect() as conn:
        row = (await conn.execute(sql.POST_RUN_NO_SHARDS, run_params(items))).one()
        memory = await conn.execute(text("SELECT current_setting('wallet.checked_entries', true)"))
        assert sorted(int(i) for i in memory.scalar_one().strip(",").split(",")) == sorted(
            row.entry_ids
        )
        await conn.commit()
        after = await conn.execute(text("SELECT current_setting('wallet.checked_entries', true)"))
        assert after.scalar_one() in ("", None)
