"""A BRIN index on `entries.created_at`: the auditor's incremental zero-sum check (OPS-3, issue 13).

The consistency auditor's incremental round checks only the transfers with an entry created since
its last round (minus an overlap), instead of summing every entry ever written each minute. Entries
are appended in roughly `created_at` order, so a BRIN index (a few pages for millions of rows, one
summary per 32 heap pages, nothing written per insert) finds the recent ones without a B-tree's
cost on every posting. A range not summarized yet is read whole by every scan, so `autosummarize`
asks autovacuum to summarize each range once it fills (within its naptime) instead of at the next
vacuum of the table (which, insert-driven, comes after a fifth of the table: the unsummarized
tail, read by each round, would grow with history).

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
    # Raw DDL: op.create_index leaves out the storage parameters (WITH ...).
    op.execute(
        "CREATE INDEX ix_entries_created_brin ON entries USING brin (created_at)"
        " WITH (pages_per_range = 32, autosummarize = on)"
    )


def downgrade() -> None:
    op.drop_index("ix_entries_created_brin", table_name="entries")
