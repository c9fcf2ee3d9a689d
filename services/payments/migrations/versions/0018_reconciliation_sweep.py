"""The provider reconciliation's sweep and its payments that cannot be read (OPS-3).

`ReconcileProvider` compared only its window, the `limit` most recently changed payments: under
load (123 postings/s) that is 1-2 % of them, and a payment changed at the provider after it
left the window (a dashboard refund, a dispute, a late capture) was never compared again. A round
now also checks a bounded batch of older payments from a durable cursor, the sweep:

`payment_reconciliation_sweep` holds that cursor, one row: the (`updated_at`, `id`) of the last
payment a pass went past, and when the pass began. A pass goes through the payments with a
provider id changed within the horizon before it began (`PAYMENTS_RECONCILE_SWEEP_HORIZON_DAYS`)
in (`updated_at`, `id`) order, through `ix_payments_updated_at` (0008): no index is added to
`payments`, whose every update (none is HOT) would write it on the posting path. A payment that
changes during a pass moves past the pass's end, into the window and the next pass.

`payment_reconciliations.unreadable_since`: when its checks began to find the provider
unreadable (unreachable, or no longer configured here), cleared by a check that reads it. Past
`PAYMENTS_RECONCILE_UNREADABLE_GRACE_SECONDS` the payment is reported (the auditor's
`provider_unreadable`). A record with findings or unreadable is open: `ix_payment_reconciliations
_open` holds only those (few), which a round checks again, and which are not forgotten.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01 22:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# tables.py says it in the same words.
OPEN = "mismatches <> '[]'::jsonb OR unreadable_since IS NOT NULL"


def upgrade() -> None:
    op.add_column(
        "payment_reconciliations",
        sa.Column("unreadable_since", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_payment_reconciliations_open",
        "payment_reconciliations",
        ["checked_at"],
        postgresql_where=sa.text(OPEN),
    )
    op.create_table(
        "payment_reconciliation_sweep",
        sa.Column("id", sa.SmallInteger, primary_key=True),
        sa.Column("after_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("after_id", sa.String(64), nullable=True),
        sa.Column("pass_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_payment_reconciliation_sweep_one_row"),
    )


def downgrade() -> None:
    op.drop_table("payment_reconciliation_sweep")
    op.drop_index("ix_payment_reconciliations_open", table_name="payment_reconciliations")
    op.drop_column("payment_reconciliations", "unreadable_since")
