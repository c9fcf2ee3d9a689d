"""The ledger on real PostgreSQL: transfers, idempotency, splits, sharded balances, and the
database's own guards (zero sum at commit, append-only entries, no overdraft)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from hirepay_platform.errors import ValidationError
from hirepay_platform.tcc import IdempotencyMismatch
from wallet.domain import commands as c
from wallet.domain.errors import (
    AccountNotFound,
    InsufficientFunds,
    UnitMismatch,
)
from wallet.domain.ledger import Leg
from wallet.domain.model import BALANCE_SHARDS, AccountKind
from wallet.domain.splits import Share
from wallet.service_layer import handlers as h

pytestmark = pytest.mark.usefixtures("sound")


async def test_transfer_posts_two_entries_per_leg_and_moves_balances(ledger, deps):
    alice, bob, carol = (
        await ledger.open("alice"),
        await ledger.open("bob"),
        await ledger.open("carol"),
    )
    await ledger.fund(alice, 10_000)
    legs = (Leg(alice, bob, 3000, "USD"), Leg(alice, carol, 1000, "USD"))
    result = await h.transfer(c.Transfer(f"t-{ledger.tag}", legs, "lunch", {"order": "42"}), deps)
    assert [(e.account_id, e.amount) for e in result.transfer.entries] == [
        (alice, -3000),
        (bob, 3000),
        (alice, -1000),
        (carol, 1000),
    ]
    assert all(e.description == "lunch" for e in result.transfer.entries)
    assert await ledger.balances(alice, bob, carol) == [(6000, 0), (3000, 0), (1000, 0)]
    stored = await h.get_transfer(c.GetTransfer(f"t-{ledger.tag}"), deps)
    assert stored == result.transfer


async def test_identical_retry_replays_and_changed_retry_is_refused(ledger, deps):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 5000)
    cmd = c.Transfer(f"t-{ledger.tag}", (Leg(alice, bob, 100, "USD"),), "x", {"a": "1"})
    first = await h.transfer(cmd, deps)
    again = await h.transfer(cmd, deps)
    assert again.replayed and again.transfer == first.transfer
    changed = c.Transfer(cmd.transfer_id, cmd.legs, cmd.description, {"a": "2"})
    with pytest.raises(IdempotencyMismatch) as caught:
        await h.transfer(changed, deps)
    assert caught.value.metadata["field"] == "metadata"
    split = c.SplitTransfer(cmd.transfer_id, alice, 100, "USD", (Share(bob, 10000),), bob, "x")
    with pytest.raises(IdempotencyMismatch) as caught:
        await h.split_transfer(split, deps)
    assert caught.value.metadata["field"] == "operation"
    assert await ledger.balances(alice, bob) == [(4900, 0), (100, 0)]


async def test_refusals_leave_every_balance_untouched(ledger, deps):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    euro = await ledger.open("alice-eur", unit="EUR")
    await ledger.fund(alice, 1000)
    with pytest.raises(InsufficientFunds):
        legs = (Leg(alice, bob, 600, "USD"), Leg(alice, bob, 401, "USD"))
        await h.transfer(c.Transfer(f"t1-{ledger.tag}", legs), deps)
    with pytest.raises(UnitMismatch):
        await h.transfer(c.Transfer(f"t2-{ledger.tag}", (Leg(alice, euro, 1, "USD"),)), deps)
    with pytest.raises(AccountNotFound):
        ghost = "00000000-0000-4000-8000-000000000001"
        await h.transfer(c.Transfer(f"t3-{ledger.tag}", (Leg(ghost, bob, 1, "USD"),)), deps)
    with pytest.raises(ValidationError):
        await h.transfer(c.Transfer(f"t4-{ledger.tag}", (Leg(alice, bob, 0, "USD"),)), deps)
    assert await ledger.balances(alice, bob, euro) == [(1000, 0), (0, 0), (0, 0)]


async def test_split_transfer_with_remainder_rule(ledger, deps):
    customer, contractor = await ledger.open("customer"), await ledger.open("contractor")
    escrow = await ledger.open("job", AccountKind.ESCROW)
    revenue = await ledger.open("platform", AccountKind.PLATFORM_REVENUE)
    await ledger.fund(customer, 10_001)
    # ESC-7: 20% service fee, 70% contractor, 10% stays in escrow; remainder to the contractor
    cmd = c.SplitTransfer(
        f"s-{ledger.tag}",
        customer,
        10_001,
        "USD",
        (Share(revenue, 2000), Share(contractor, 7000), Share(escrow, 1000)),
        contractor,
    )
    await h.split_transfer(cmd, deps)
    balances = await ledger.balances(customer, revenue, contractor, escrow)
    assert balances == [(0, 0), (2000, 0), (7001, 0), (1000, 0)]


async def test_fees_spread_over_revenue_shards_and_sum_to_the_balance(ledger, deps, engine):
    payer = await ledger.open("payer")
    revenue = await ledger.open("platform", AccountKind.PLATFORM_REVENUE)
    await ledger.fund(payer, 100_000)
    for i in range(40):
        cmd = c.Transfer(f"fee-{i}-{ledger.tag}", (Leg(payer, revenue, i + 1, "USD"),))
        await h.transfer(cmd, deps)
    async with engine.connect() as db:
        shards = (
            await db.execute(
                text("SELECT shard, posted FROM account_shards WHERE account_id = :a"),
                {"a": revenue},
            )
        ).all()
        row = (
            await db.execute(text("SELECT posted FROM accounts WHERE id = :a"), {"a": revenue})
        ).one()
    assert len(shards) == BALANCE_SHARDS
    assert sum(1 for _, posted in shards if posted) > 4  # the fees did not all queue on one row
    assert row.posted == 0
    assert (await ledger.balance(revenue)).posted == sum(range(1, 41)) == sum(p for _, p in shards)


async def test_debits_of_the_revenue_account_never_overdraw_it(ledger, deps):
    payer, refunded = await ledger.open("payer"), await ledger.open("refunded")
    revenue = await ledger.open("platform", AccountKind.PLATFORM_REVENUE)
    await ledger.fund(payer, 1000)
    for i in range(10):
        await h.transfer(
            c.Transfer(f"fee-{i}-{ledger.tag}", (Leg(payer, revenue, 10, "USD"),)), deps
        )
    with pytest.raises(InsufficientFunds):
        await h.transfer(
            c.Transfer(f"r1-{ledger.tag}", (Leg(revenue, refunded, 101, "USD"),)), deps
        )
    await h.transfer(c.Transfer(f"r2-{ledger.tag}", (Leg(revenue, refunded, 100, "USD"),)), deps)
    assert await ledger.balances(revenue, refunded) == [(0, 0), (100, 0)]


async def test_history_pages_with_an_opaque_token(ledger, deps):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 1000)
    for i in range(7):
        await h.transfer(c.Transfer(f"h{i}-{ledger.tag}", (Leg(alice, bob, i + 1, "USD"),)), deps)
    amounts, token, pages = [], "", 0
    while True:
        page = await h.list_entries(c.ListEntries(alice, 3, token), deps)
        amounts += [e.amount for e in page.items]
        pages += 1
        if not (token := page.next_page_token):
            break
    assert pages == 3
    assert amounts == [-7, -6, -5, -4, -3, -2, -1, 1000]
    with pytest.raises(ValidationError):
        await h.list_entries(c.ListEntries(alice, 3, "garbage!"), deps)


async def test_list_accounts_of_an_owner(ledger, deps):
    for unit in ("USD", "EUR", "JPY", "COIN"):
        await ledger.open("multi", unit=unit)
    page1 = await h.list_accounts(c.ListAccounts(f"multi-{ledger.tag}", 3), deps)
    page2 = await h.list_accounts(
        c.ListAccounts(f"multi-{ledger.tag}", 3, page1.next_page_token), deps
    )
    assert [a.ref.unit for a in page1.items + page2.items] == ["USD", "EUR", "JPY", "COIN"]
    assert page2.next_page_token == ""


# --- the database's own guards ---------------------------------------------------------------


async def test_an_unbalanced_insert_fails_at_commit_not_before(ledger, sessions):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    async with sessions() as session:
        await session.execute(
            text("INSERT INTO transfers (id, kind, fingerprint) VALUES (:t, 'transfer', '{}')"),
            {"t": f"bad-{ledger.tag}"},
        )
        # accepted while the transaction is open: the check is deferred to COMMIT
        await session.execute(
            text(
                "INSERT INTO entries (transfer_id, account_id, unit, amount) "
                "VALUES (:t, :a, 'USD', -500), (:t, :b, 'USD', 499)"
            ),
            {"t": f"bad-{ledger.tag}", "a": alice, "b": bob},
        )
        with pytest.raises(IntegrityError, match="does not balance"):
            await session.commit()
    async with sessions() as session:
        found = await session.execute(
            text("SELECT count(*) FROM entries WHERE transfer_id = :t"), {"t": f"bad-{ledger.tag}"}
        )
        assert found.scalar_one() == 0


async def test_a_balanced_direct_insert_commits_but_an_entry_in_a_foreign_unit_does_not(
    ledger, sessions
):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    euro = await ledger.open("bob-eur", unit="EUR")
    await ledger.fund(alice, 10)
    insert = text("INSERT INTO transfers (id, kind, fingerprint) VALUES (:t, 'transfer', '{}')")
    entries = text(
        "INSERT INTO entries (transfer_id, account_id, unit, amount) "
        "VALUES (:t, :a, 'USD', -5), (:t, :b, 'USD', 5)"
    )
    move = text(
        "UPDATE accounts SET posted = posted + CASE WHEN id = :a THEN -5 ELSE 5 END "
        "WHERE id IN (:a, :b)"
    )
    async with sessions() as session:
        await session.execute(insert, {"t": f"ok-{ledger.tag}"})
        await session.execute(entries, {"t": f"ok-{ledger.tag}", "a": alice, "b": bob})
        await session.execute(move, {"a": alice, "b": bob})  # keeps balances = sum of entries
        await session.commit()
    assert await ledger.balances(alice, bob) == [(5, 0), (5, 0)]
    async with sessions() as session:
        await session.execute(insert, {"t": f"eur-{ledger.tag}"})
        await session.execute(entries, {"t": f"eur-{ledger.tag}", "a": alice, "b": euro})
        with pytest.raises(IntegrityError, match="not in the unit"):
            await session.commit()


async def test_a_transaction_is_judged_per_transfer_at_commit(ledger, sessions):
    """Two transfers written by one transaction, their entries in several statements in any
    order: each transfer is summed at COMMIT, and one that does not balance fails the lot."""
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    transfer = text("INSERT INTO transfers (id, kind, fingerprint) VALUES (:t, 'transfer', '{}')")
    entry = text(
        "INSERT INTO entries (transfer_id, account_id, unit, amount) VALUES (:t, :a, 'USD', :m)"
    )
    first, second = f"two-a-{ledger.tag}", f"two-b-{ledger.tag}"
    async with sessions() as session:
        for t in (first, second):
            await session.execute(transfer, {"t": t})
        await session.execute(entry, {"t": first, "a": alice, "m": -3})
        await session.execute(entry, {"t": second, "a": alice, "m": -2})
        await session.execute(entry, {"t": first, "a": bob, "m": 3})
        await session.execute(entry, {"t": second, "a": bob, "m": 1})  # 1 short
        with pytest.raises(IntegrityError, match=f"transfer {second} does not balance"):
            await session.commit()
    async with sessions() as session:
        found = await session.execute(
            text("SELECT count(*) FROM transfers WHERE id IN (:a, :b)"), {"a": first, "b": second}
        )
        assert found.scalar_one() == 0


async def test_entries_are_append_only_and_balances_cannot_go_negative(ledger, sessions):
    alice, bob = await ledger.open("alice"), await ledger.open("bob")
    await ledger.fund(alice, 100)
    async with sessions() as session:
        with pytest.raises(DBAPIError, match="append-only"):
            await session.execute(
                text("UPDATE entries SET amount = amount * 2 WHERE account_id = :a"), {"a": alice}
            )
    async with sessions() as session:
        with pytest.raises(DBAPIError, match="append-only"):
            await session.execute(text("DELETE FROM entries WHERE account_id = :a"), {"a": alice})
    async with sessions() as session:
        with pytest.raises(IntegrityError, match="no_overdraft"):
            await session.execute(
                text("UPDATE accounts SET posted = posted - 101 WHERE id = :a"), {"a": alice}
            )
    assert await ledger.balances(alice, bob) == [(100, 0), (0, 0)]
