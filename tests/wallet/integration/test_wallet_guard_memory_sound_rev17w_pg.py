"""Nothing a transaction does after its entries were checked by their statement (0010's memory)
lets an unsound transfer commit: what the check read can no longer change before COMMIT (0011).
Each test writes a balanced transfer in one statement (its entries remembered as checked), then
tries to change under it what the check relied on."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from hirepay_dev.pg import libpq_url

pytestmark = pytest.mark.usefixtures("sound")

_TRANSFER = text("INSERT INTO transfers (id, kind, fingerprint) VALUES (:t, 'transfer', '{}')")


async def _checked_transfer(session, ledger, name: str) -> tuple[str, str, str]:
    """A transfer of 5 USD between two new accounts, its two entries written by one statement and
    so remembered as checked: (transfer, payer, payee)."""
    payer, payee = await ledger.open(f"{name}-payer", neg=True), await ledger.open(f"{name}-payee")
    transfer_id = f"{name}-{ledger.tag}"
    await session.execute(_TRANSFER, {"t": transfer_id})
    await session.execute(
        text(
            "INSERT INTO entries (transfer_id, account_id, unit, amount)"
            " VALUES (:t, :a, 'USD', -5), (:t, :b, 'USD', 5)"
        ),
        {"t": transfer_id, "a": payer, "b": payee},
    )
    memory = await session.execute(text("SELECT current_setting('wallet.checked_entries', true)"))
    assert memory.scalar_one().count(",") == 3  # both entries remembered
    return transfer_id, payer, payee


async def test_an_accounts_unit_never_changes_under_checked_entries(ledger, sessions):
    """Before 0011 the account's new unit committed under the entries checked in USD (COMMIT
    skipped them); now the UPDATE itself is refused, in this transaction or any later one."""
    async with sessions() as session:
        transfer_id, payer, _ = await _checked_transfer(session, ledger, "unit")
        with pytest.raises(DBAPIError, match="its unit never changes") as refused:
            await session.execute(
                text("UPDATE accounts SET unit = 'EUR' WHERE id = :a"), {"a": payer}
            )
        assert refused.value.orig.pgcode == "23001"  # restrict_violation
    async with sessions() as session:
        await session.execute(text("UPDATE accounts SET unit = unit WHERE id = :a"), {"a": payer})
        with pytest.raises(DBAPIError, match="its unit never changes"):
            await session.execute(
                text("UPDATE accounts SET unit = 'EUR' WHERE id = :a"), {"a": payer}
            )
    async with sessions() as session:
        found = await session.execute(
            text("SELECT count(*) FROM entries WHERE transfer_id = :t"), {"t": transfer_id}
        )
        assert found.scalar_one() == 0  # nothing of the refused transaction committed


@pytest.mark.parametrize("table", ["transfers", "accounts"])
async def test_the_ledgers_rows_are_never_truncated(ledger, sessions, table):
    """Before 0011 `TRUNCATE transfers` after the check committed entries naming no transfer (no
    foreign key names transfers any more); `TRUNCATE accounts ... CASCADE` would have passed too."""
    async with sessions() as session:
        await _checked_transfer(session, ledger, f"trunc-{table}")
        with pytest.raises(DBAPIError, match="is never truncated") as refused:
            await session.execute(text(f"TRUNCATE {table} CASCADE"))
        assert refused.value.orig.pgcode == "23001"


async def test_entries_are_never_truncated(ledger, sessions):
    """Append-only (0001) was a row trigger, which a TRUNCATE never fires."""
    payer, payee = await ledger.open("wipe-payer"), await ledger.open("wipe-payee")
    await ledger.fund(payer, 10)
    async with sessions() as session:
        with pytest.raises(DBAPIError, match="entries is never truncated"):
            await session.execute(text("TRUNCATE entries"))
    assert await ledger.balances(payer, payee) == [(10, 0), (0, 0)]


async def test_a_later_statement_unbalancing_a_checked_transfer_fails_the_commit(ledger, sessions):
    """The memory is the last statement's: a second statement adding an entry to the checked
    transfer (with a sound transfer of its own, which it remembers) leaves the first transfer's
    entries to COMMIT's full check, which refuses it; nothing commits."""
    async with sessions() as session:
        transfer_id, payer, payee = await _checked_transfer(session, ledger, "later")
        other = f"other-{ledger.tag}"
        await session.execute(_TRANSFER, {"t": other})
        await session.execute(
            text(
                "INSERT INTO entries (transfer_id, account_id, unit, amount)"
                " VALUES (:t, :b, 'USD', 1), (:o, :a, 'USD', -3), (:o, :b, 'USD', 3)"
            ),
            {"t": transfer_id, "o": other, "a": payer, "b": payee},
        )
        with pytest.raises(IntegrityError, match=f"transfer {transfer_id} does not balance"):
            await session.commit()
    async with sessions() as session:
        found = await session.execute(
            text("SELECT count(*) FROM transfers WHERE id IN (:t, :o)"),
            {"t": transfer_id, "o": other},
        )
        assert found.scalar_one() == 0


async def test_entries_copied_in_are_checked_as_inserted_ones(ledger, wallet_db_url):
    """COPY fires the statement's check as an INSERT does: copied entries that balance are
    remembered (COMMIT reads nothing for them), copied ones that do not are refused at COMMIT."""
    payer, payee = await ledger.open("copy-payer", neg=True), await ledger.open("copy-payee")
    connection = await asyncpg.connect(libpq_url(wallet_db_url))
    try:
        for name, amounts in (("sound", (-4, 4)), ("unsound", (-4, 3))):
            transfer_id = f"copy-{name}-{ledger.tag}"
            transaction = connection.transaction()
            await transaction.start()
            await connection.execute(
                "INSERT INTO transfers (id, kind, fingerprint) VALUES ($1, 'transfer', '{}')",
                transfer_id,
            )
            rows = [
                (transfer_id, payer, "USD", amounts[0]),
                (transfer_id, payee, "USD", amounts[1]),
            ]
            await connection.copy_records_to_table(
                "entries", records=rows, columns=["transfer_id", "account_id", "unit", "amount"]
            )
            memory = await connection.fetchval(
                "SELECT current_setting('wallet.checked_entries', true)"
            )
            if name == "sound":
                assert memory.count(",") == 3
                # Balances follow their entries, as the ledger audit requires.
                for account, amount in ((payer, amounts[0]), (payee, amounts[1])):
                    await connection.execute(
                        "UPDATE accounts SET posted = posted + $2 WHERE id = $1", account, amount
                    )
                await transaction.commit()
            else:
                assert memory == ""
                with pytest.raises(asyncpg.CheckViolationError, match="does not balance"):
                    await transaction.commit()
    finally:
        await connection.close()
    assert await ledger.balances(payer, payee) == [(-4, 0), (4, 0)]
