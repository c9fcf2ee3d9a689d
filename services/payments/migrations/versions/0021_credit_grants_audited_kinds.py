"""The ledger auditor's bookings by kind through their own partial index (ESC-1, OPS-3, issue 13).

AuditLedgerBookings reads the bookings of disputes' balance transactions (0019), of refunds that
failed after they succeeded and of purchases' refunds in part (round 13) by kind and creation time.
`credit_grants` holds a booking per captured payment (every posting), and no index served those
reads, so each audit round scanned the whole table. These kinds are rare: a partial index of just
them by `created_at` holds a handful of rows, and a posting's booking (kind `capture`) never
enters it, so it costs the posting path nothing.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_credit_grants_audited",
        "credit_grants",
        ["created_at"],
        postgresql_where=sa.text(
            "credit_grants.kind IN ('dispute', 'purchase_refund', 'refund_failed')"
        ),
    )


def downgrade() -> None:
    op.drop_index("ix_credit_grants_audited", table_name="credit_grants")
