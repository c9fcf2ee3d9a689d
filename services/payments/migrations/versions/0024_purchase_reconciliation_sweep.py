"""The reconciliation's pass through paid plan purchases has a durable place (OPS-3).

Round 15 made `ReconcileProvider` read paid plan purchases of a provider whose refunds made at it
arrive by no event (Fatora: a refund from its dashboard) a batch a round, from a cursor held in
the process's memory: a restart (or a kill -9) began the pass again from the oldest purchase, so
with frequent restarts the newest of a long pass were never reached. The cursor is now a row of
`purchase_reconciliation_sweeps`, one per provider: the (`updated_at`, `id`) of the last purchase
its pass went past (null: none yet) and when the pass began; a pass reads the paid purchases
changed within the horizon before it began, through `ix_transactions_updated_at` (no index is
added to `transactions`). A round writes its provider's row after its checks, in one statement
that never moves it back (two rounds at once: the one further on wins); what the round booked was
booked idempotently before, so a restart between the two reads those purchases again and books
nothing twice.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-02 12:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "purchase_reconciliation_sweeps",
        sa.Column("provider", sa.String(32), primary_key=True),
        sa.Column("after_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("after_id", sa.String(64), nullable=True),
        sa.Column("pass_started_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("purchase_reconciliation_sweeps")
