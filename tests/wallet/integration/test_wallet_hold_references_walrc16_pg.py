"""What a Reserve + Confirm pair costs the database in referential checks, and that what the holds'
foreign keys guaranteed still holds (migration 0009, issue 13).

Each new hold ran two referential checks at its statement's end (its account, its destination)
and each Confirm one (the hold's transfer): a query each, and a KEY SHARE lock written to the
referenced row - the payer's, the payee's, the Confirm's own transfer. A group of 32 pairs: 9.2
-> 8.2 WAL records and 42.9 -> 33.9 buffer hits per Reserve, 25.0 -> 24.1 WAL records and 85.2 ->
78.6 buffer hits per Confirm (PostgreSQL 16, pg_stat_wal and pg_stat_database, autovacuum off).
Pinned here as what is load-independent: after a group, no row only referenced carries a lock
(its tuple's xmax stays 0), each group still one statement that commits itself."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text

from hirepay_platform.errors import HirepayError
from hirepay_platform.tcc import TccBranch
from tests.wallet.integration.conftest import barrier_rows, warm_refs
from wallet.domain import commands as c
from wallet.domain.holds import confirm_transfer_id
from wallet.service_layer.batcher import HoldBatchers

pytestmark = pytest.mark.usefixtures("sound")

GROUP = 12


async def _xmax(sessions, table: str, ids: list[str]) -> dict[str, str]:
    """The xmax of each row's current version ("0": no transaction locked or changed it since)."""
    async with sessions() as session:
        rows = await session.execute(
            text(
                f"SELECT CAST(id AS text), CAST(xmax AS text) FROM {table}"
                " WHERE CAST(id AS text) = ANY(:ids)"
            ),
            {"ids": ids},
        )
        return dict(rows.all())


async def test_holds_have_no_foreign_keys(sessions):
    async with sessions() as session:
        keys = await session.execute(
            text(
                "SELECT conname FROM pg_constraint"
                " WHERE conrelid = CAST('holds' AS regclass) AND contype = 'f'"
            )
        )
        assert keys.scalars().all() == []


async def test_a_group_of_reserves_and_confirms_locks_no_referenced_row(
    ledger, deps, sessions, round_trips
):
    """GROUP concurrent Reserves then their Confirms, each its own payer and payee (as the bench's
    workers): each group one statement that commits itself; after the Reserves no payee's row
    (only named by its hold) carries a lock, after the Confirms no transfer row does (each was
    locked KEY SHARE by a referential check). Every balance exact."""
    payers = [await ledger.open(f"payer{i}") for i in range(GROUP)]
    payees = [await ledger.open(f"payee{i}") for i in range(GROUP)]
    for payer in payers:
        await ledger.fund(payer, 1_000)
    await warm_refs(deps, *payers, *payees)  # as on a running wallet
    holds = HoldBatchers(deps, max_items=GROUP)
    branches = [TccBranch(f"ref-{uuid.uuid4().hex}", "payment") for _ in range(GROUP)]
    reserves = [
        c.ReserveHold(b, payer, payee, 100, "USD")
        for b, payer, payee in zip(branches, payers, payees, strict=True)
    ]
    with round_trips:
        reserved = await asyncio.gather(*(holds.reserve.call(r) for r in reserves))
    assert [r.replayed for r in reserved] == [False] * GROUP
    assert len(round_trips.statements) == 1 and round_trips.transaction_control == []
    # (A payer's row carries the statement's own FOR NO KEY UPDATE lock into its new version.)
    assert set((await _xmax(sessions, "accounts", payees)).values()) == {"0"}

    with round_trips:
        confirmed = await asyncio.gather(*(holds.confirm.call(c.ConfirmHold(b)) for b in branches))
    assert [r.replayed for r in confirmed] == [False] * GROUP
    assert len(round_trips.statements) == 1 and round_trips.transaction_control == []
    transfers = [confirm_transfer_id(b) for b in branches]
    assert set((await _xmax(sessions, "transfers", transfers)).values()) == {"0"}
    assert await ledger.balances(payers[0], payees[0], payers[-1], payees[-1]) == [
        (900, 0),
        (100, 0),
        (900, 0),
        (100, 0),
    ]


async def test_a_reserve_naming_a_missing_account_writes_nothing(ledger, deps, sessions):
    """What the foreign keys refused, the Try refuses before it writes: no hold, no barrier row."""
    payer = await ledger.open("payer")
    await ledger.fund(payer, 1_000)
    missing = str(uuid.uuid4())
    holds = HoldBatchers(deps, max_items=2)
    for account, destination in ((payer, missing), (missing, payer)):
        branch = TccBranch(f"ref-{uuid.uuid4().hex}", "payment")
        with pytest.raises(HirepayError) as refused:
            await holds.reserve.call(c.ReserveHold(branch, account, destination, 100, "USD"))
        assert refused.value.reason == "ACCOUNT_NOT_FOUND"
        assert await barrier_rows(sessions, branch) == []
    assert await ledger.balances(payer) == [(1_000, 0)]
