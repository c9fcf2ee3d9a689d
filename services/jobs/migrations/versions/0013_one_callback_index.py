"""Marketplace events keep one index of due callbacks, `ix_marketplace_events_callbacks_due`
(issue 13).

`ix_marketplace_events_due` (0006, on `callback_next_at`) and `ix_marketplace_events_callbacks_due`
(0008, on `cursor`) hold the same rows, those with a callback due. Since 0008 the callback relay's
lease (`callback_next_at <= now ORDER BY cursor LIMIT n`) reads the second, and its backlog count
(`IS NOT NULL`) is served by either; nothing reads the first, while every event and every move of
its `callback_next_at` (lease, retry, delivery) wrote an entry into both. The first goes (as
payments' `ix_outbox_callback_next_at`, payments 0013).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 13:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_marketplace_events_due", table_name="marketplace_events")


def downgrade() -> None:
    op.create_index(
        "ix_marketplace_events_due",
        "marketplace_events",
        ["callback_next_at"],
        postgresql_where=sa.text("callback_next_at IS NOT NULL"),
    )
