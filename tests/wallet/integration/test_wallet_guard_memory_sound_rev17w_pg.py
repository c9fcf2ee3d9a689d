"""Nothing a transaction does after its entries were checked by their statement (0010's memory)
lets an unsound transfer commit: what the check read can no longer change before COMMIT (0011).
Each test writes a balanced transfer in one statement (its entries remembered as checked), then
tries to change under it what the check relied on."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

pytestmark = pytest.mark.usefixtures("sound")


async def _checked_transfer(session, ledger, name: str) -> tuple[str, str, str]:
    """A transfer of 5 USD between two new accounts, its two entries written by one statement and
    so remembered as checked: (transfer, payer, payee)."""
    payer, payee = await ledger.open(f"{name}-payer", neg=True), await ledger.open(f"{name}-payee")
    transfer_id = f"{name}-{ledger.tag}"
    await session.execute(
        text("INSERT INTO transfers (id, kind, fingerprint) VALUES (:t, 'transfer', '{}')"),
        {"t": transfer_id},
    )
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
