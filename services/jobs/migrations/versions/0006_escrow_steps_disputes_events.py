"""Escrow money steps, disputes, and the marketplace events outbox (signed callbacks)

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

    op.create_table(
        "engagement_steps",
        sa.Column("engagement_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("transfer_id", sa.String(length=200), nullable=False),
        sa.Column("legs", postgresql.JSONB(), nullable=False),
        sa.Column("payment_id", sa.String(length=128), nullable=False),
        sa.Column("refund_minor", sa.BigInteger(), nullable=False),
        sa.Column("refund_id", sa.String(length=128), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failure", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["engagement_id"], ["engagements.id"]),
        sa.PrimaryKeyConstraint("engagement_id", "kind"),
    )
    op.create_index(
        "ix_engagement_steps_due",
        "engagement_steps",
        ["next_attempt_at"],
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_table(
        "disputes",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("engagement_id", sa.String(length=64), nullable=False, unique=True),
        sa.Column("opened_by", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("engagement_state", sa.String(length=16), nullable=False),
        sa.Column("resolution", sa.String(length=16), nullable=False),
        sa.Column("contractor_minor", sa.BigInteger(), nullable=False),
        sa.Column("resolved_by", sa.String(length=128), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["engagement_id"], ["engagements.id"]),
    )
    op.create_index("ix_disputes_state_opened", "disputes", ["state", "opened_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_disputes_state_opened", table_name="disputes")
    op.drop_table("disputes")
    op.drop_index("ix_engagement_steps_due", table_name="engagement_steps")
    op.drop_table("engagement_steps")
    op.drop_index("ix_marketplace_events_due", table_name="marketplace_events")
    op.drop_index("ix_marketplace_events_subject", table_name="marketplace_events")
    op.drop_table("marketplace_events")
