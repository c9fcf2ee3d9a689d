"""Marketplace events outbox: signed callbacks of offer, engagement and dispute changes

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 16:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "marketplace_events",
        sa.Column("cursor", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.String(length=64), nullable=False, unique=True),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("subsystem", sa.String(length=64), nullable=False),
        sa.Column("data", postgresql.JSONB(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("callback_next_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("callback_attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("callback_delivered_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_marketplace_events_subject", "marketplace_events", ["subject_id", "cursor"])
    op.create_index(
        "ix_marketplace_events_due",
        "marketplace_events",
        ["callback_next_at"],
        postgresql_where=sa.text("callback_next_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_marketplace_events_due", table_name="marketplace_events")
    op.drop_index("ix_marketplace_events_subject", table_name="marketplace_events")
    op.drop_table("marketplace_events")
