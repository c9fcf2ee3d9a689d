"""The ledger: accounts and balance shards, transfers and entries, holds, and the TCC barrier.

The database enforces what must never break even if the application is wrong: entries of a
transfer sum to zero per unit (checked at commit by a deferred constraint trigger), entries carry
their account's unit and are append-only, and non-negative accounts never go below zero.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEDGER_GUARDS = [
    # Runs at commit (deferred), once per inserted entry: the entry's unit must be its account's,
    # and its transfer's entries must sum to zero in every unit. A transaction that breaks either
    # fails at COMMIT, whatever code wrote it.
    """
    CREATE FUNCTION wallet_check_transfer_balanced() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        bad_unit text;
        bad_sum numeric;
    BEGIN
        IF NOT EXISTS (
            SELECT 1 FROM accounts WHERE id = NEW.account_id AND unit = NEW.unit
        ) THEN
            RAISE EXCEPTION 'entry % is in %, not in the unit of account %',
                NEW.id, NEW.unit, NEW.account_id
                USING ERRCODE = 'check_violation';
        END IF;
        SELECT unit, sum(amount) INTO bad_unit, bad_sum
          FROM entries
         WHERE transfer_id = NEW.transfer_id
         GROUP BY unit
        HAVING sum(amount) <> 0
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'transfer % does not balance: % % left over',
                NEW.transfer_id, bad_sum, bad_unit
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE CONSTRAINT TRIGGER entries_balanced
        AFTER INSERT ON entries
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION wallet_check_transfer_balanced()
    """,
    # History is never rewritten: corrections are new transfers.
    """
    CREATE FUNCTION wallet_entries_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'ledger entries are append-only' USING ERRCODE = 'restrict_violation';
    END $$
    """,
    """
    CREATE TRIGGER entries_append_only
        BEFORE UPDATE OR DELETE ON entries
        FOR EACH ROW EXECUTE FUNCTION wallet_entries_append_only()
    """,
]


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("owner_id", sa.Text(), nullable=False),
        sa.Column("unit", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("allow_negative", sa.Boolean(), nullable=False),
        sa.Column("shards", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("posted", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("pending", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "allow_negative OR shards > 0 OR posted - pending >= 0",
            name=op.f("ck_accounts_no_overdraft"),
        ),
        sa.CheckConstraint("pending >= 0", name=op.f("ck_accounts_pending_not_negative")),
        sa.CheckConstraint("shards >= 0", name=op.f("ck_accounts_shards_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint(
            "owner_id", "unit", "kind", name=op.f("uq_accounts_owner_id_unit_kind")
        ),
        sa.UniqueConstraint("seq", name=op.f("uq_accounts_seq")),
    )
    op.create_table(
        "tcc_barriers",
        sa.Column("global_tx_id", sa.Text(), nullable=False),
        sa.Column("branch_id", sa.Text(), nullable=False),
        sa.Column("op", sa.Text(), nullable=False),
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("fingerprint", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("op IN ('try', 'confirm', 'cancel')", name=op.f("ck_tcc_barriers_op")),
        sa.CheckConstraint(
            "origin IN ('try', 'confirm', 'cancel')", name=op.f("ck_tcc_barriers_origin")
        ),
        sa.PrimaryKeyConstraint("global_tx_id", "branch_id", "op", name=op.f("pk_tcc_barriers")),
    )
    op.create_table(
        "transfers",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column(
            "metadata",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("fingerprint", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("kind IN ('transfer', 'split', 'hold')", name=op.f("ck_transfers_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transfers")),
    )
    op.create_table(
        "account_shards",
        sa.Column("account_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("posted", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_account_shards_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", "shard", name=op.f("pk_account_shards")),
    )
    op.create_table(
        "entries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("transfer_id", sa.Text(), nullable=False),
        sa.Column("account_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("unit", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_entries_amount_not_zero")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_entries_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["transfer_id"], ["transfers.id"], name=op.f("fk_entries_transfer_id_transfers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entries")),
    )
    op.create_index(
        "ix_entries_account_history",
        "entries",
        ["account_id", sa.literal_column("id DESC")],
        unique=False,
    )
    op.create_index("ix_entries_transfer_id", "entries", ["transfer_id"], unique=False)
    op.create_table(
        "holds",
        sa.Column("global_tx_id", sa.Text(), nullable=False),
        sa.Column("branch_id", sa.Text(), nullable=False),
        sa.Column("account_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("destination_account_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("unit", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("confirmed_amount", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("transfer_id", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(state = 'pending') = (resolved_at IS NULL)",
            name=op.f("ck_holds_resolved_iff_not_pending"),
        ),
        sa.CheckConstraint(
            "state IN ('pending', 'confirmed', 'cancelled', 'expired')", name=op.f("ck_holds_state")
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_holds_amount_positive")),
        sa.CheckConstraint(
            "confirmed_amount BETWEEN 0 AND amount", name=op.f("ck_holds_confirmed_within_hold")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_holds_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["destination_account_id"],
            ["accounts.id"],
            name=op.f("fk_holds_destination_account_id_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["transfer_id"], ["transfers.id"], name=op.f("fk_holds_transfer_id_transfers")
        ),
        sa.PrimaryKeyConstraint("global_tx_id", "branch_id", name=op.f("pk_holds")),
    )
    op.create_index(
        "ix_holds_pending_expiry",
        "holds",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("state = 'pending'"),
    )
    for statement in LEDGER_GUARDS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS entries_append_only ON entries")
    op.execute("DROP TRIGGER IF EXISTS entries_balanced ON entries")
    op.execute("DROP FUNCTION IF EXISTS wallet_entries_append_only()")
    op.execute("DROP FUNCTION IF EXISTS wallet_check_transfer_balanced()")
    op.drop_index(
        "ix_holds_pending_expiry", table_name="holds", postgresql_where=sa.text("state = 'pending'")
    )
    op.drop_table("holds")
    op.drop_index("ix_entries_transfer_id", table_name="entries")
    op.drop_index("ix_entries_account_history", table_name="entries")
    op.drop_table("entries")
    op.drop_table("account_shards")
    op.drop_table("transfers")
    op.drop_table("tcc_barriers")
    op.drop_table("accounts")
