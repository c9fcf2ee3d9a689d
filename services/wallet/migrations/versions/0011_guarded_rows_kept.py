"""What the commit guard's memory relies on is enforced, not assumed: an account's unit never
changes, and no ledger table (accounts, transfers, entries) is ever truncated (round 17 review,
rev17w).

Since 0010 the guard checks a statement's transfers right after the statement and COMMIT skips the
entries it remembered; the skip is sound only if nothing the check read can change before COMMIT.
Entries are append-only (0001) and a row DELETE or re-key of an account or of a transfer with
entries is refused (0007), but two changes were still allowed and were no longer caught:

  - `UPDATE accounts SET unit = ...` after a transfer's entries were checked: the transaction
    committed entries in a unit their account no longer has (before 0010 COMMIT's check read the
    new unit and refused it; in a later transaction nothing ever did);
  - `TRUNCATE transfers` (no foreign key names it since 0007/0009, so nothing refused it): the
    checked entries committed naming transfers that no longer exist. `TRUNCATE accounts` is refused
    today only because account_shards' foreign key names it (and `... CASCADE` would pass).

Both are refused now, as the ledger promises (0001: entries carry their account's unit; 0007:
accounts and transfers with entries are never removed), and so is `TRUNCATE entries`, which the
append-only rule (0001, a row trigger) never saw. The triggers fire only on an UPDATE
naming `unit` or on a TRUNCATE, which no code path makes: the hot path pays nothing.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_GUARDS = [
    """
    CREATE FUNCTION wallet_accounts_unit_fixed() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'account % is in %: its unit never changes', OLD.id, OLD.unit
            USING ERRCODE = 'restrict_violation';
    END $$
    """,
    """
    CREATE TRIGGER accounts_unit_fixed
        BEFORE UPDATE OF unit ON accounts
        FOR EACH ROW WHEN (OLD.unit IS DISTINCT FROM NEW.unit)
        EXECUTE FUNCTION wallet_accounts_unit_fixed()
    """,
    # A TRUNCATE is a DELETE of every row without row triggers: refused as theirs are.
    """
    CREATE FUNCTION wallet_ledger_never_truncated() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '% is never truncated: its rows are never removed', TG_TABLE_NAME
            USING ERRCODE = 'restrict_violation';
    END $$
    """,
    """
    CREATE TRIGGER accounts_never_truncated
        BEFORE TRUNCATE ON accounts
        FOR EACH STATEMENT EXECUTE FUNCTION wallet_ledger_never_truncated()
    """,
    """
    CREATE TRIGGER transfers_never_truncated
        BEFORE TRUNCATE ON transfers
        FOR EACH STATEMENT EXECUTE FUNCTION wallet_ledger_never_truncated()
    """,
    """
    CREATE TRIGGER entries_never_truncated
        BEFORE TRUNCATE ON entries
        FOR EACH STATEMENT EXECUTE FUNCTION wallet_ledger_never_truncated()
    """,
]


def upgrade() -> None:
    for statement in _GUARDS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS entries_never_truncated ON entries")
    op.execute("DROP TRIGGER IF EXISTS transfers_never_truncated ON transfers")
    op.execute("DROP TRIGGER IF EXISTS accounts_never_truncated ON accounts")
    op.execute("DROP FUNCTION IF EXISTS wallet_ledger_never_truncated()")
    op.execute("DROP TRIGGER IF EXISTS accounts_unit_fixed ON accounts")
    op.execute("DROP FUNCTION IF EXISTS wallet_accounts_unit_fixed()")
