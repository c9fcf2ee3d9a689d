"""Grouped transfers update their account rows in place (migration 0008, issue 13): a group of
concurrent Transfer calls is one statement that updates every payer's and payee's row, and with
half of each accounts page kept free every new row version stays on its row's page - a HOT update,
no entry in any of the table's four indexes. At the default fillfactor the packed pages had no
room and a third of a group's row versions moved to another page, four index entries each (96 of
a group of 32's 386 B-tree inserts; 2,158 WAL bytes and 57 buffer hits per transfer, now 1,827
and 47, PostgreSQL 15)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text

from tests.wallet.integration.conftest import warm_refs
from wallet.domain import commands as c
from wallet.domain.ledger import Leg
from wallet.service_layer.batcher import TransferBatcher

pytestmark = pytest.mark.usefixtures("sound")

GROUP = 32
GROUPS = 4
FUNDS = 1_000_000


async def _pages(sessions, account_ids: list[str]) -> dict[str, int]:
    """The page (block number) each account's current row version is on."""
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT CAST(id AS text), (CAST(CAST(ctid AS text) AS point))[0]"
                " FROM accounts WHERE id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": account_ids},
        )
        return {account_id: int(block) for account_id, block in rows}


async def test_accounts_pages_keep_room_for_their_rows_updates(sessions):
    async with sessions() as session:
        options = await session.execute(
            text("SELECT reloptions FROM pg_class WHERE relname = 'accounts'")
        )
        assert options.scalar_one() == ["fillfactor=50"]


async def test_a_group_of_transfers_updates_every_account_row_on_its_page(
    ledger, deps, sessions, round_trips
):
    """GROUPS groups of GROUP concurrent transfers, each its own payer and payee (as the bench's
    workers): each group one statement committing itself, and after them every account row is
    still on the page it was opened on (every update HOT). Every balance exact."""
    payers = [await ledger.open(f"payer{i}") for i in range(GROUP)]
    payees = [await ledger.open(f"payee{i}") for i in range(GROUP)]
    for payer in payers:
        await ledger.fund(payer, FUNDS)
    await warm_refs(deps, *payers, *payees)  # as on a running wallet
    opened = await _pages(sessions, payers + payees)
    batcher = TransferBatcher(deps, max_items=GROUP)
    for _ in range(GROUPS):
        transfers = [
            c.Transfer(f"hot-{uuid.uuid4().hex}", (Leg(payer, payee, 100, "USD"),))
            for payer, payee in zip(payers, payees, strict=True)
        ]
        with round_trips:
            results = await asyncio.gather(*(batcher.transfer(t) for t in transfers))
        assert [r.replayed for r in results] == [False] * GROUP
        assert len(round_trips.statements) == 1 and round_trips.transaction_control == []
    assert await _pages(sessions, payers + payees) == opened
    assert await ledger.balances(payers[0], payees[0], payers[-1], payees[-1]) == [
        (FUNDS - 100 * GROUPS, 0),
        (100 * GROUPS, 0),
        (FUNDS - 100 * GROUPS, 0),
        (100 * GROUPS, 0),
    ]
