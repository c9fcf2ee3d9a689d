"""What a fee costs the database, and that what the entries' foreign keys guaranteed still holds
(migration 0007, issue 13): a group of fee transfers into the sharded revenue account probes each
transfer's row once (the commit-time guard) instead of once per entry, never locks the revenue
account's row, and an entry naming no transfer or no account, a transfer with entries deleted,
or an account deleted, is still refused. Concurrent fee-paying Reserve+Confirm pairs leave every
balance exact to the cent."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from hirepay_platform.tcc import TccBranch
from tests.wallet.integration.conftest import warm_refs
from wallet.adapters.repositories import ledger_sql as sql
from wallet.adapters.repositories.ledger import run_params
from wallet.domain import commands as c
from wallet.domain.ledger import Leg, entries_for_legs, plan_posting
from wallet.domain.model import AccountKind
from wallet.domain.splits import Share
from wallet.service_layer import handlers as h
from wallet.service_layer.batcher import HoldBatchers
from wallet.service_layer.handlers.transfers import transfer_header

pytestmark = pytest.mark.usefixtures("sound")

ROUND = 32

# Reads of a table by this transaction so far (index and sequential scans), read as they are at
# each read (stats_fetch_consistency = none).
_SCANS = text(
    "SELECT coalesce(sum(idx_scan), 0) + coalesce(sum(seq_scan), 0)"
    " FROM pg_stat_xact_user_tables WHERE relname = :table"
)


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)


async def _fee_round(ledger, deps) -> tuple[str, list[tuple[object, object]]]:
    """ROUND transfers, each paying 100 to its payee and a fee of 10 into the revenue account,
    planned as a group (one shard key) ready for POST_RUN."""
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
        legs = (Leg(payer, payee, 100, "USD"), Leg(payer, revenue, 10, "USD"))
        header, legs = transfer_header(c.Transfer(f"fee-{uuid.uuid4().hex}", legs))
        items.append((header, plan_posting(key, entries_for_legs(legs, refs), refs)))
    return revenue, items


async def test_a_fee_group_probes_each_transfer_row_twice_not_once_more_per_entry(
    ledger, deps, engine
):
    """A group of fee transfers (four entries each) reads `transfers` at most twice per transfer
    (its claim's probe, and the guard's), not once more per entry (a foreign key's check: six per
    transfer). Since 0010 the guard reads them with the statement, all in one query (a probe
    each, or one scan of a small table), and COMMIT reads none."""
    _, items = await _fee_round(ledger, deps)
    async with engine.connect() as conn:
        await conn.execute(text("SET LOCAL stats_fetch_consistency = 'none'"))
        before = (await conn.execute(_SCANS, {"table": "transfers"})).scalar_one()
        row = (await conn.execute(sql.POST_RUN, run_params(items))).one()
        assert row.ok and len(row.entry_ids) == 4 * ROUND
        written = (await conn.execute(_SCANS, {"table": "transfers"})).scalar_one() - before
        await conn.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))  # the deferred guard runs now
        scans = (await conn.execute(_SCANS, {"table": "transfers"})).scalar_one() - before
        assert scans == written <= 2 * ROUND
        await conn.rollback()


async def test_a_fee_group_never_locks_the_revenue_account_row(ledger, deps, engine):
    """The sharded revenue account's row, which a credit never changes, is not locked by a group
    paying fees into it (a foreign key's check took a KEY SHARE lock on it, written to its tuple,
    in every group)."""
    revenue, items = await _fee_round(ledger, deps)
    async with engine.connect() as conn:
        row = (await conn.execute(sql.POST_RUN, run_params(items))).one()
        assert row.ok
        await conn.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))  # the guard ran too
        locker = await conn.execute(
            text(
                "SELECT xmax = CAST(CAST(pg_current_xact_id() AS text) AS xid)"
                " FROM accounts WHERE id = :id"
            ),
            {"id": revenue},
        )
        assert locker.scalar_one() is False  # not locked by this transaction
        await conn.rollback()


async def test_an_entry_naming_no_transfer_fails_at_commit(ledger, sessions):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    entries = text(
        "INSERT INTO entries (transfer_id, account_id, unit, amount) "
        "VALUES (:t, :a, 'USD', -5), (:t, :b, 'USD', 5)"
    )
    missing = f"nowhere-{ledger.tag}"
    async with sessions() as session:
        await session.execute(entries, {"t": missing, "a": alice, "b": bob})  # checked at COMMIT
        with pytest.raises(IntegrityError, match=f"names transfer {missing}, which does not") as e:
            await session.commit()
    assert _sqlstate(e.value) == "23503"
    async with sessions() as session:
        found = await session.execute(
            text("SELECT count(*) FROM entries WHERE transfer_id = :t"), {"t": missing}
        )
        assert found.scalar_one() == 0


async def test_an_entry_naming_no_account_fails_at_commit(ledger, sessions):
    alice = await ledger.open("alice")
    nobody = str(uuid.uuid4())
    transfer_id = f"ghost-{ledger.tag}"
    async with sessions() as session:
        await session.execute(
            text("INSERT INTO transfers (id, kind, fingerprint) VALUES (:t, 'transfer', '{}')"),
            {"t": transfer_id},
        )
        await session.execute(
            text(
                "INSERT INTO entries (transfer_id, account_id, unit, amount) "
                "VALUES (:t, :a, 'USD', -5), (:t, :b, 'USD', 5)"
            ),
            {"t": transfer_id, "a": alice, "b": nobody},
        )
        with pytest.raises(IntegrityError, match=f"names account {nobody}, which does not") as e:
            await session.commit()
    assert _sqlstate(e.value) == "23503"


async def test_a_transfer_with_entries_is_never_deleted_but_a_bare_claim_is(ledger, deps, sessions):
    """A posted transfer keeps its row (as the foreign key's NO ACTION kept it); a claim without
    entries (a refused posting's) is given back."""
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 10)
    posted = f"kept-{ledger.tag}"
    await h.transfer(c.Transfer(posted, (Leg(alice, bob, 5, "USD"),)), deps)
    async with sessions() as session:
        with pytest.raises(IntegrityError, match=f"transfer {posted} has entries") as e:
            await session.execute(text("DELETE FROM transfers WHERE id = :t"), {"t": posted})
    assert _sqlstate(e.value) == "23503"
    async with sessions() as session:
        with pytest.raises(IntegrityError, match=f"transfer {posted} has entries"):
            await session.execute(
                text("UPDATE transfers SET id = :n WHERE id = :t"), {"t": posted, "n": posted + "x"}
            )
    bare = f"bare-{ledger.tag}"
    async with sessions() as session:
        await session.execute(
            text("INSERT INTO transfers (id, kind, fingerprint) VALUES (:t, 'transfer', '{}')"),
            {"t": bare},
        )
        deleted = await session.execute(text("DELETE FROM transfers WHERE id = :t"), {"t": bare})
        assert deleted.rowcount == 1
        await session.commit()
    assert (await h.get_transfer(c.GetTransfer(posted), deps)).id == posted


async def test_an_account_is_never_deleted(ledger, sessions):
    """Not even one without entries: entries, holds and shards name accounts for ever."""
    unused = await ledger.open("unused")
    async with sessions() as session:
        with pytest.raises(DBAPIError, match=f"account {unused} is never deleted") as e:
            await session.execute(text("DELETE FROM accounts WHERE id = :a"), {"a": unused})
    assert _sqlstate(e.value) == "23001"


async def test_concurrent_fee_paying_reserve_confirm_pairs_leave_every_balance_exact(
    ledger, deps, sessions
):
    """Many concurrent ReserveHold + ConfirmHold pairs, each Confirm splitting 10% into the
    sharded revenue account, grouped by the batchers (several groups in flight): every fee is on
    the ledger once, to the cent, in the revenue account's shards and entries alike."""
    revenue = await ledger.open("platform", AccountKind.PLATFORM_REVENUE)
    payers = [await ledger.open(f"payer{i}") for i in range(8)]
    payees = [await ledger.open(f"payee{i}") for i in range(8)]
    for payer in payers:
        await ledger.fund(payer, 100_000)
    batchers = HoldBatchers(deps, max_items=16, window_seconds=0.002, max_in_flight=3)
    pairs = 96

    async def pair(n: int) -> None:
        payer, payee = payers[n % 8], payees[n % 8]
        branch = TccBranch(f"fee-{ledger.tag}-{n}", "payment")
        await batchers.reserve.call(c.ReserveHold(branch, payer, payee, 101, "USD"))
        shares = (Share(revenue, 1_000), Share(payee, 9_000))
        result = await batchers.confirm.call(c.ConfirmHold(branch, 0, shares, payee))
        assert result.transfer is not None

    await asyncio.gather(*(pair(n) for n in range(pairs)))
    per_pair = pairs // 8
    # 10% of 101 is 10.1: 10 to the revenue account, the remainder (91) to the payee.
    assert await ledger.balances(*payers) == [(100_000 - 101 * per_pair, 0)] * 8
    assert await ledger.balances(*payees) == [(91 * per_pair, 0)] * 8
    assert await ledger.balances(revenue) == [(10 * pairs, 0)]
    async with sessions() as session:
        shards = await session.execute(
            text("SELECT sum(posted) FROM account_shards WHERE account_id = :a"), {"a": revenue}
        )
        assert shards.scalar_one() == 10 * pairs
        credited = await session.execute(
            text("SELECT sum(amount), count(*) FROM entries WHERE account_id = :a"), {"a": revenue}
        )
        assert tuple(credited.one()) == (10 * pairs, pairs)


async def test_a_group_of_fee_paying_confirms_changes_one_revenue_shard(
    ledger, deps, sessions, round_trips
):
    """A group of ConfirmHold calls each splitting a fee into the sharded revenue account is one
    statement committing itself, and its fees change ONE shard row of the revenue account (picked
    for the group, as a group of Transfer calls picks one), not one per Confirm's transfer id:
    one shard row locked and updated per group. Every balance exact to the cent."""
    revenue = await ledger.open("platform", AccountKind.PLATFORM_REVENUE)
    payers = [await ledger.open(f"payer{i}") for i in range(ROUND)]
    payees = [await ledger.open(f"payee{i}") for i in range(ROUND)]
    for payer in payers:
        await ledger.fund(payer, 1000)
    branches = [TccBranch(f"one-shard-{ledger.tag}-{n}", "payment") for n in range(ROUND)]
    reserved = await h.reserve_holds(
        [
            c.ReserveHold(b, payer, payee, 101, "USD")
            for b, payer, payee in zip(branches, payers, payees, strict=True)
        ],
        deps,
    )
    assert [o.error for o in reserved] == [None] * ROUND
    await warm_refs(deps, revenue, *payers, *payees)  # as on a running wallet
    cmds = [
        c.ConfirmHold(b, 0, (Share(revenue, 1_000), Share(payee, 9_000)), payee)
        for b, payee in zip(branches, payees, strict=True)
    ]
    with round_trips:
        confirmed = await h.confirm_holds(cmds, deps)
    assert [o.error for o in confirmed] == [None] * ROUND
    assert len(round_trips.statements) == 1 and round_trips.transaction_control == []
    async with sessions() as session:
        shards = await session.execute(
            text("SELECT posted FROM account_shards WHERE account_id = :a AND posted <> 0"),
            {"a": revenue},
        )
        assert list(shards.scalars()) == [10 * ROUND]  # one shard changed, every fee in it
    assert await ledger.balances(revenue, payers[0], payees[0]) == [
        (10 * ROUND, 0),
        (1000 - 101, 0),
        (91, 0),
    ]
