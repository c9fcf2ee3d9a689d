"""A BRIN index on `entries.created_at`: the auditor's incremental zero-sum check (OPS-3, issue 13).

The consistency auditor's incremental round checks only the transfers with an entry created since
its last round (minus an overlap), instead of summing every entry ever written each minute. Entries
are appended in roughly `created_at` order, so a BRIN index (a few pages for millions of rows, one
summary per 128 heap pages, nothing written per insert until a range fills) finds the recent ones
without a B-tree's cost on every posting.

Revision ID: 0006
Revises: 0004 (re-chained after 0005 at merge)
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_entries_created_brin", "entries", ["created_at"], postgresql_using="brin")


def downgrade() -> None:
    op.drop_index("ix_entries_created_brin", table_name="entries")
