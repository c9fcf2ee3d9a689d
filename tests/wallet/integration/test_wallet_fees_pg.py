"""Fees into the one sharded platform revenue account on real PostgreSQL (issue 13): what a grouped
round of fee-paying transfers costs the database, that the commit-time guard checks each transfer
once and still catches every unbalanced one, and that concurrent fees leave the revenue balance
exact (its shards sum to every fee, the ledger audit balances)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from tests.wallet.integration.conftest import warm_refs
from wallet.adapters.repositories import ledger_sql as sql
from wallet.adapters.repositories.ledger import run_params
from wallet.domain import commands as c
from wallet.domain.ledger import Leg, entries_for_legs, plan_posting
from wallet.domain.model import AccountKind
from wallet.service_layer import handlers as h
from wallet.service_layer.batcher import TransferBatcher
from wallet.service_layer.handlers.transfers import transfer_header

pytestmark = pytest.mark.usefixtures("sound")

ROUND = 32


def fee_transfer(payer: str, payee: str, revenue: str) -> c.Transfer:
    """A payment of 100 with a fee of 10 into the revenue account, as the benchmark sends it."""
    legs = (Leg(payer, payee, 100, "USD"), Leg(payer, revenue, 10, "USD"))
    return c.Transfer(f"fee-{uuid.uuid4().hex}", legs)


async def _shards(sessions, account_id: str) -> list[int]:
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT posted FROM account_shards WHERE account_id = :a ORDER BY shard"),
            {"a": account_id},
        )
        return [posted for (posted,) in rows]


async def test_a_grouped_round_of_fee_transfers_is_one_statement_committing_itself(
    ledger, deps, sessions, round_trips
):
    """A round of transfers each paying a fee into the sharded revenue account takes the same
    one-statement path as plain transfers (no per-item slow path: a credit to a sharded account
    needs no check), and changes one shard row for the whole round."""
    revenue = await ledger.open("platform", AccountKind.PLATFORM_REVENUE)
    payers = [await ledger.open(f"payer{i}") for i in range(ROUND)]
    payees = [await ledger.open(f"payee{i}") for i in range(ROUND)]
    for payer in payers:
        await ledger.fund(payer, 1000)
    await warm_refs(deps, revenue, *payers, *payees)
    cmds = tuple(fee_transfer(p, q, revenue) for p, q in zip(payers, payees, strict=True))
    with round_trips:
        outcomes = await h.create_transfers(c.CreateTransfers(cmds), deps)
    assert [o.error for o in outcomes] == [None] * ROUND
    assert len(round_trips.statements) == 1
    assert round_trips.statements[0].startswith("WITH item AS")
    assert round_trips.transaction_control == []
    assert await ledger.balances(*payers[:2], *payees[:2], revenue) == [
        (890, 0),
        (890, 0),
        (100, 0),
        (100, 0),
        (10 * ROUND, 0),
    ]
    shards = await _shards(sessions, revenue)
    assert sum(shards) == 10 * ROUND and sorted(shards)[-1] == 10 * ROUND  # one shard changed


async def test_the_commit_guard_reads_each_transfer_once(ledger, deps, engine):
    """The guard checks each transfer's entries once, not once per entry: a round of fee
    transfers (four entries each) reads entries at most once per transfer (counted in the
    transaction's own statistics, independent of load). Since 0010 it reads them with the
    statement, in one query for the round (an index scan per transfer, or one scan of a small
    table), and the deferred firings at COMMIT read none."""
    revenue = await ledger.open("platform", AccountKind.PLATFORM_REVENUE)
    payers = [await ledger.open(f"payer{i}") for i in range(ROUND)]
    payees = [await ledger.open(f"payee{i}") for i in range(ROUND)]
    for payer in payers:
        await ledger.fund(payer, 1000)
    async with deps.uow() as uow:
        refs = await uow.accounts.refs({revenue, *payers, *payees})
    key = uuid.uuid4().hex
    items = []
    for payer, payee in zip(payers, payees, strict=True):
        header, legs = transfer_header(fee_transfer(payer, payee, revenue))
        items.append((header, plan_posting(key, entries_for_legs(legs, refs), refs)))
    scans = text(
        "SELECT coalesce(sum(idx_scan), 0) + coalesce(sum(seq_scan), 0)"
        " FROM pg_stat_xact_user_tables WHERE relname = 'entries'"
    )
    async with engine.connect() as conn:
        # Read the counters as they are at each read, not as first read in the transaction.
        await conn.execute(text("SET LOCAL stats_fetch_consistency = 'none'"))
        before = (await conn.execute(scans)).scalar_one()
        row = (await conn.execute(sql.POST_RUN, run_params(items))).one()
        assert row.ok and len(row.entry_ids) == 4 * ROUND
        written = (await conn.execute(scans)).scalar_one()
        await conn.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))  # the deferred guard runs now
        assert (await conn.execute(scans)).scalar_one() == written
        assert written - before <= ROUND
        await conn.rollback()


async def test_an_entry_added_after_its_transfer_was_checked_is_checked_again(ledger, sessions):
    """The guard's memory of checked entries covers only the rows it summed: an entry appended to
    a transfer already checked in the same transaction (after SET CONSTRAINTS ... IMMEDIATE)
    makes COMMIT check the transfer again, whatever its id."""
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    transfer = text("INSERT INTO transfers (id, kind, fingerprint) VALUES (:t, 'transfer', '{}')")
    entry = text(
        "INSERT INTO entries (id, transfer_id, account_id, unit, amount) "
        "VALUES (:id, :t, :a, 'USD', :m)"
    )
    transfer_id = f"late-{ledger.tag}"
    async with sessions() as session:
        await session.execute(transfer, {"t": transfer_id})
        top = (await session.execute(text("SELECT coalesce(max(id), 0) FROM entries"))).scalar()
        await session.execute(entry, {"id": top + 10, "t": transfer_id, "a": alice, "m": -5})
        await session.execute(entry, {"id": top + 11, "t": transfer_id, "a": bob, "m": 5})
        await session.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))  # checked: balances
        await session.execute(text("SET CONSTRAINTS ALL DEFERRED"))
        # a lower id than the checked ones: not among them, so the transfer is summed again
        await session.execute(entry, {"id": top + 5, "t": transfer_id, "a": bob, "m": 1})
        with pytest.raises(IntegrityError, match=f"transfer {transfer_id} does not balance"):
            await session.commit()


async def test_concurrent_fee_transfers_leave_the_revenue_balance_exact(ledger, deps, sessions):
    """Many concurrent fee-paying Transfer calls, grouped into rounds (several in flight at once,
    each round on a shard of its own): every fee is on the ledger once, the revenue balance is
    the sum of its shards and of its entries, and every payer and payee is exact."""
    revenue = await ledger.open("platform", AccountKind.PLATFORM_REVENUE)
    payers = [await ledger.open(f"payer{i}") for i in range(8)]
    payees = [await ledger.open(f"payee{i}") for i in range(8)]
    for payer in payers:
        await ledger.fund(payer, 100_000)
    batcher = TransferBatcher(deps, max_items=16, window_seconds=0.002, max_in_flight=4)
    calls = 200
    cmds = [fee_transfer(payers[i % 8], payees[i % 8], revenue) for i in range(calls)]
    results = await asyncio.gather(*(batcher.transfer(cmd) for cmd in cmds))
    assert all(not r.replayed for r in results)
    # each again: replayed, nothing posted twice
    again = await asyncio.gather(*(batcher.transfer(cmd) for cmd in cmds[:20]))
    assert all(r.replayed for r in again)
    per_pair = calls // 8
    assert await ledger.balances(*payers) == [(100_000 - 110 * per_pair, 0)] * 8
    assert await ledger.balances(*payees) == [(100 * per_pair, 0)] * 8
    assert await ledger.balances(revenue) == [(10 * calls, 0)]
    assert sum(await _shards(sessions, revenue)) == 10 * calls
    async with sessions() as session:
        credited = await session.execute(
            text("SELECT sum(amount) FROM entries WHERE account_id = :a"), {"a": revenue}
        )
        assert credited.scalar_one() == 10 * calls
