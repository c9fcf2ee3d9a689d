"""When the provider reconciliation last checked each payment, and what it found (OPS-3).

`ReconcileProvider` compares the auditor's window (the `limit` most recently changed payments)
with their providers within the caller's deadline, and answers with those it reached. It checked
them most recently changed first, so under a deadline too short for the whole window the same
newest payments were checked round after round and the oldest of the window never were. A round
now checks the payments of its window never checked first, then the longest unchecked (ties:
most recently changed first), and records each check it completed here: the ones a round did not
reach are the first of the next, so a payment stays unchecked for at most about its window's
size over the checks a round completes rounds (a few with any deadline that allows one).

What that check found (`mismatches`, [{"kind", "detail"}], empty when it agreed) is kept with it: a
round cut short answers, besides what it found, the earlier findings of the window's payments it
did not reach, so a mismatch stays in the auditor's report between the rounds that check its
payment (it would otherwise show once a pass through the window and vanish in between).

Only the window's payments are read, so a record not renewed for a day belongs to a payment that
left the window (one in it is checked again within a few rounds) and is forgotten, a bounded batch
a round, by `ix_payment_reconciliations_checked_at`: the table holds about a day of the window's
payments, not every payment ever checked. A payment that comes back into the window (it changed
again) is then one never checked: it comes first.

A table of its own, not a column of `payments`: the record is bookkeeping of the auditor's, it
must not move a payment's `updated_at` (the window's order) nor lock or rewrite a payment's row
(the posting path's), and it is written once a round for the checks it completed (one upsert).
One row per payment ever checked, read by primary key for a window (at most 500 ids). Payments
are never deleted, so no foreign key: it would only make every upsert check `payments`.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payment_reconciliations",
        sa.Column("payment_id", sa.String(64), primary_key=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mismatches", JSONB, nullable=False, server_default="[]"),
    )
    op.create_index(
        "ix_payment_reconciliations_checked_at", "payment_reconciliations", ["checked_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_payment_reconciliations_checked_at", table_name="payment_reconciliations")
    op.drop_table("payment_reconciliations")
