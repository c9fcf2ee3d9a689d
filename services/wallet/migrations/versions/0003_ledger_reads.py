"""Indexes of the ledger's readers (ESC-11): entries of an account by time (commission earnings
read platform revenue's entries in a range; time-filtered histories) and accounts by kind in
opening order (the admin balance listing filtered by kind).

Built CONCURRENTLY outside the migration's transaction, so a live ledger keeps posting while the
index on its largest table is built.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_entries_account_time",
            "entries",
            ["account_id", "created_at"],
            unique=False,
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        op.create_index(
            "ix_accounts_kind_seq",
            "accounts",
            ["kind", "seq"],
            unique=False,
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_accounts_kind_seq",
            table_name="accounts",
            postgresql_concurrently=True,
            if_exists=True,
        )
        op.drop_index(
            "ix_entries_account_time",
            table_name="entries",
            postgresql_concurrently=True,
            if_exists=True,
        )
