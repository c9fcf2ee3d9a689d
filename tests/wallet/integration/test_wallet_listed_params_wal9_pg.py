"""The hot statements' comma-joined parameters and hot hold statements on real PostgreSQL (issue
13): ids, units, kinds and amounts are bound as one string each (`hirepay_platform.sql_lists`),
so a run with no row change at all, a run of many items, and the values' edge cases must post exactly what
their arrays did; the hold statements run hot and keep their meaning (overdraft refused, replays,
concurrent groups)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text

from hirepay_platform.errors import HirepayError
from hirepay_platform.sql_lists import joined, listed
from hirepay_platform.tcc import TccBranch
from wallet.adapters.repositories import holds as hold_sql
from wallet.domain import commands as c
from wallet.domain.errors import InsufficientFunds
from wallet.domain.ledger import Leg
from wallet.domain.model import AccountKind, validate_client_id
from wallet.service_layer import handlers as h
from wallet.service_layer.handlers import grouped_holds as gh

pytestmark = pytest.mark.usefixtures("sound")


async def test_a_listed_parameter_is_the_array_it_joins(sessions):
    """ "" is the empty array, one value a one-element array, values keep their order and type."""
    query = text(
        f"SELECT {listed('u', 'uuid')} AS u, {listed('n', 'bigint')} AS n, "
        f"{listed('t', 'text')} AS words"
    )
    ids = [str(uuid.uuid4()) for _ in range(3)]
    async with sessions() as session:
        row = (
            await session.execute(query, {"u": joined(ids), "n": joined([-5, 0, 2**40]), "t": ""})
        ).one()
        assert [str(u) for u in row.u] == ids
        assert row.n == [-5, 0, 2**40]
        assert row.words == []
        one = (
            await session.execute(query, {"u": joined(ids[:1]), "n": "7", "t": "a.b_c@d-e:f"})
        ).one()
        assert [str(u) for u in one.u] == ids[:1] and one.n == [7] and one.words == ["a.b_c@d-e:f"]


def test_a_joined_value_can_hold_no_comma():
    """What is joined never holds a comma: client ids and branches refuse one."""
    with pytest.raises(HirepayError, match="transfer_id"):
        validate_client_id("a,b", "transfer_id")
    with pytest.raises(HirepayError):
        TccBranch("saga,1", "payment").validated()
    with pytest.raises(HirepayError):
        TccBranch("saga", "pay,ment").validated()


async def test_a_transfer_between_two_sharded_accounts_changes_no_account_row(ledger, deps):
    """Its run has no row change at all (every listed row parameter is ""), only shard changes."""
    clearing = await ledger.open("clearing", AccountKind.PROVIDER_CLEARING, neg=True)
    revenue = await ledger.open("platform", AccountKind.PLATFORM_REVENUE)
    cmds = tuple(
        c.Transfer(f"s2s-{uuid.uuid4().hex}", (Leg(clearing, revenue, 10 + i, "USD"),))
        for i in range(3)
    )
    outcomes = await h.create_transfers(c.CreateTransfers(cmds), deps)
    assert [o.error for o in outcomes] == [None] * 3
    assert await ledger.balances(clearing, revenue) == [(-33, 0), (33, 0)]


async def test_a_batch_of_many_fee_transfers_posts_every_value_in_its_place(ledger, deps):
    """A batch of 200 transfers with amounts that differ, two legs each, one of them to the
    sharded revenue account: every balance exact (a value out of place would show)."""
    revenue = await ledger.open("platform", AccountKind.PLATFORM_REVENUE)
    payers = [await ledger.open(f"payer{i}") for i in range(4)]
    payees = [await ledger.open(f"payee{i}") for i in range(4)]
    for payer in payers:
        await ledger.fund(payer, 1_000_000)
    cmds = tuple(
        c.Transfer(
            f"many-{uuid.uuid4().hex}",
            (
                Leg(payers[i % 4], payees[i % 4], 100 + i, "USD"),
                Leg(payers[i % 4], revenue, i + 1, "USD"),
            ),
        )
        for i in range(200)
    )
    outcomes = await h.create_transfers(c.CreateTransfers(cmds), deps)
    assert [o.error for o in outcomes] == [None] * 200
    for k in range(4):
        mine = [i for i in range(200) if i % 4 == k]
        paid = sum(100 + i for i in mine)
        fees = sum(i + 1 for i in mine)
        assert await ledger.balances(payers[k], payees[k]) == [
            (1_000_000 - paid - fees, 0),
            (paid, 0),
        ]
    assert await ledger.balances(revenue) == [(sum(range(1, 201)), 0)]


async def test_grouped_holds_run_hot_and_keep_their_meaning(ledger, deps):
    """Concurrent groups of Trys and Confirms through the hot statements: holds that do not fit
    are refused alone (overdraft), a repeated Try is a replay, every balance exact."""
    payers = [await ledger.open(f"payer{i}") for i in range(4)]
    payee = await ledger.open("payee")
    for payer in payers:
        await ledger.fund(payer, 1_000)
    branches = [TccBranch(f"hot-{uuid.uuid4().hex}", "payment") for _ in range(24)]

    def try_(i: int) -> c.ReserveHold:
        return c.ReserveHold(branches[i], payers[i % 4], payee, 200, "USD")

    groups = [[try_(i) for i in range(g, 24, 4)] for g in range(4)]  # one payer per group
    results = await asyncio.gather(*(gh.reserve_holds(group, deps) for group in groups))
    # 6 Trys of 200 on each payer of 1000: 5 fit, the 6th is refused alone
    for outcomes in results:
        assert [type(o.error) for o in outcomes] == [type(None)] * 5 + [InsufficientFunds]
    assert hold_sql._RESERVE_ALONE._plans or hold_sql._TRY_AND_LOCK._plans  # ran hot
    again = await gh.reserve_holds([try_(0)], deps)
    assert again[0].result is not None and again[0].result.replayed
    held = [b for i, b in enumerate(branches) if i < 20]
    confirms = [[c.ConfirmHold(b) for b in held[k::4]] for k in range(4)]
    done = await asyncio.gather(*(gh.confirm_holds(group, deps) for group in confirms))
    assert all(o.error is None and o.result.transfer is not None for g in done for o in g)
    assert hold_sql._CONFIRM_ALONE_NO_SHARDS._plans  # ran hot
    assert await ledger.balances(*payers) == [(0, 0)] * 4
    assert await ledger.balances(payee) == [(4_000, 0)]
