"""An index for the callback relay's round (issue 13): its due rows in cursor order.

The relay (API-5) leases `callback_next_at <= now ORDER BY cursor LIMIT n` every round. Once its
prepared statement's plan is generic (`now` unknown), PostgreSQL walked the outbox's primary key
in cursor order, filtering every row ever written: 27 ms for 7,000 rows with none due, growing
with history. `ix_outbox_callbacks_due` holds the undelivered rows only, in cursor order, so the
round reads those (0.03 ms); a row gets an entry only while a callback is due (none for card
postings).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 05:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_outbox_callbacks_due",
        "outbox",
        ["cursor"],
        postgresql_where=sa.text("callback_next_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_callbacks_due", table_name="outbox")
