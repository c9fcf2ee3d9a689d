"""Refunds of offer money made at the provider, outside the escrow (ESC-1, ESC-8): one row per
payments refund id, with the legs that book it (unwound from the escrow, or owed) and whether it
is posted.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 04:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "escrow_refunds",
        sa.Column("refund_id", sa.String(128), primary_key=True),
        sa.Column("engagement_id", sa.String(64), sa.ForeignKey("engagements.id"), nullable=False),
        sa.Column("payment_id", sa.String(128), nullable=False),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("legs", postgresql.JSONB, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("failure", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_escrow_refunds_engagement", "escrow_refunds", ["engagement_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_escrow_refunds_engagement", table_name="escrow_refunds")
    op.drop_table("escrow_refunds")
