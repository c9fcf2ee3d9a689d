"""Refunds and subscription transactions by `updated_at`: the auditor's incremental bookings check
(OPS-3, issue 13).

AuditLedgerBookings' incremental round reads only the captures, refunds and transactions whose
record changed since its last round (minus an overlap). Payments already have
`ix_payments_updated_at` (0008); refunds and transactions get theirs, so that round reads what
changed rather than every row ever settled. Both tables change rarely (a refund, a subscription
payment), so the indexes cost the posting path nothing.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_refunds_updated_at", "refunds", ["updated_at"])
    op.create_index("ix_transactions_updated_at", "transactions", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_transactions_updated_at", table_name="transactions")
    op.drop_index("ix_refunds_updated_at", table_name="refunds")
