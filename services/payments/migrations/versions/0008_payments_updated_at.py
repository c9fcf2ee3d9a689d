"""An index for the provider reconciliation's read of the most recently changed payments
(issue 13).

The consistency auditor asks for a reconciliation every minute (OPS-3): `recently_changed` reads
the last N payments by `updated_at`. Without an index PostgreSQL read every payment ever made and
sorted them to keep N (3,500 payments: a sequential scan of all 3,500 rows, ~1.3 kB each, per
round): the round's cost grew with history. With `ix_payments_updated_at` it reads the N newest
entries backwards. Payment updates were not HOT before it either (0 of 10,503 updates in a run of
3,500 postings: they change indexed columns), so it costs one index entry per update.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 05:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_payments_updated_at", "payments", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_payments_updated_at", table_name="payments")
