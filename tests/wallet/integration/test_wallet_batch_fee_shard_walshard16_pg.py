"""A ResolveHolds batch's fees into the sharded revenue account land in ONE shard row of it, picked
for the batch (as a group of ConfirmHold calls, or of transfers, picks one), on its one-statement
path and on its checked rounds alike: one shard row locked and changed per batch instead of one
per Confirm's transfer id (up to 16 for a batch of 32; issue 13). Every fee cent lands, every
balance exact."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from hirepay_platform.tcc import TccBranch
from tests.wallet.integration.conftest import warm_refs
from wallet.adapters.repositories.holds import PENDING_HOLDS
from wallet.domain import commands as c
from wallet.domain.model import AccountKind
from wallet.domain.splits import Share
from wallet.service_layer import handlers as h

pytestmark = pytest.mark.usefixtures("sound")

BATCH = 32
AMOUNT = 101  # a 10% fee of 10 (the remainder, 91, to the payee)


async def _reserved(ledger, deps) -> tuple[str, list[str], list[str], list[TccBranch]]:
    """The revenue account, BATCH payers and payees, and a hold of AMOUNT reserved for each pair."""
    revenue = await ledger.open("platform", AccountKind.PLATFORM_REVENUE)
    payers = [await ledger.open(f"payer{i}") for i in range(BATCH)]
    payees = [await ledger.open(f"payee{i}") for i in range(BATCH)]
    for payer in payers:
        await ledger.fund(payer, 1000)
    branches = [TccBranch(f"fee-shard-{uuid.uuid4().hex}", "payment") for _ in range(BATCH)]
    reserved = await h.create_holds(
        c.CreateHolds(
            tuple(
                c.ReserveHold(b, payer, payee, AMOUNT, "USD")
                for b, payer, payee in zip(branches, payers, payees, strict=True)
            )
        ),
        deps,
    )
    assert [o.error for o in reserved] == [None] * BATCH
    await warm_refs(deps, revenue, *payers, *payees)  # as on a running wallet
    return revenue, payers, payees, branches


def _confirm(branch: TccBranch, revenue: str, payee: str) -> c.ConfirmHold:
    return c.ConfirmHold(branch, 0, (Share(revenue, 1_000), Share(payee, 9_000)), payee)


async def _revenue_shards(sessions, revenue: str) -> list[int]:
    async with sessions() as session:
        shards = await session.execute(
            text("SELECT posted FROM account_shards WHERE account_id = :a AND posted <> 0"),
            {"a": revenue},
        )
        return list(shards.scalars())


async def test_a_resolve_holds_batch_puts_its_fees_into_one_revenue_shard(
    ledger, deps, sessions, round_trips
):
    """BATCH fee-paying Confirms in one ResolveHolds call: one statement committing itself, and
    ONE shard row of the revenue account changed, holding every fee (was 13-16 rows, one per
    Confirm's transfer id)."""
    revenue, payers, payees, branches = await _reserved(ledger, deps)
    batch = c.ResolveHolds(
        tuple(_confirm(b, revenue, payee) for b, payee in zip(branches, payees, strict=True))
    )
    with round_trips:
        resolved = await h.resolve_holds(batch, deps)
    assert [o.error for o in resolved] == [None] * BATCH
    assert len(round_trips.statements) == 1 and round_trips.transaction_control == []
    assert await _revenue_shards(sessions, revenue) == [10 * BATCH]
    assert await ledger.balances(revenue, payers[0], payees[0], payers[-1], payees[-1]) == [
        (10 * BATCH, 0),
        (1000 - AMOUNT, 0),
        (AMOUNT - 10, 0),
        (1000 - AMOUNT, 0),
        (AMOUNT - 10, 0),
    ]


async def test_a_checked_resolve_holds_batch_puts_its_fees_into_one_revenue_shard(
    ledger, deps, sessions, round_trips
):
    """A batch with a Cancel runs checked (its rounds in a transaction): its Confirms' fees still
    change ONE shard row of the revenue account, the one its rounds lock ahead; the cancelled
    hold's money stays with its payer, every other fee lands."""
    revenue, payers, payees, branches = await _reserved(ledger, deps)
    items: list[c.ConfirmHold | c.CancelHold] = [
        _confirm(b, revenue, payee) for b, payee in zip(branches, payees, strict=True)
    ]
    items[-1] = c.CancelHold(branches[-1], "changed their mind")
    with round_trips:
        resolved = await h.resolve_holds(c.ResolveHolds(tuple(items)), deps)
    assert [o.error for o in resolved] == [None] * BATCH
    assert round_trips.transaction_control[-1].startswith("COMMIT")  # (the checked path)
    assert await _revenue_shards(sessions, revenue) == [10 * (BATCH - 1)]
    assert await ledger.balances(revenue, payers[0], payees[0], payers[-1], payees[-1]) == [
        (10 * (BATCH - 1), 0),
        (1000 - AMOUNT, 0),
        (AMOUNT - 10, 0),
        (1000, 0),
        (0, 0),
    ]


async def test_a_checked_group_of_confirm_holds_puts_its_fees_into_one_revenue_shard(
    ledger, deps, sessions
):
    """A group of ConfirmHold calls that runs checked (a hold this process did not reserve: not
    remembered) changes one revenue shard too, as its one-statement path does."""
    revenue, payers, payees, branches = await _reserved(ledger, deps)
    PENDING_HOLDS.forget(branches)  # (as another replica's holds would be)
    cmds = [_confirm(b, revenue, payee) for b, payee in zip(branches, payees, strict=True)]
    confirmed = await h.confirm_holds(cmds, deps)
    assert [o.error for o in confirmed] == [None] * BATCH
    assert await _revenue_shards(sessions, revenue) == [10 * BATCH]
    assert await ledger.balances(revenue, payers[1], payees[1]) == [
        (10 * BATCH, 0),
        (1000 - AMOUNT, 0),
        (AMOUNT - 10, 0),
    ]
