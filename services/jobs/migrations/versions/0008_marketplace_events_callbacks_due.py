"""An index for the marketplace callback relay's round (issue 13): its due rows in cursor order.

The relay leases `callback_next_at <= now ORDER BY cursor LIMIT n` every round (the platform's
SqlCallbackQueue, as payments' outbox). Once its prepared statement's plan is generic (`now`
unknown), PostgreSQL walks the events' primary key in cursor order, filtering every event ever
written, so each round grows with history. `ix_marketplace_events_callbacks_due` holds the
undelivered events only, in cursor order, so the round reads those.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 05:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_marketplace_events_callbacks_due",
        "marketplace_events",
        ["cursor"],
        postgresql_where=sa.text("callback_next_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_marketplace_events_callbacks_due", table_name="marketplace_events")
