"""The posting rate limit's buckets and charged attempts, shared by every gateway replica

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 14:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "posting_rate_buckets",
        sa.Column("user_id", sa.String(length=255), primary_key=True),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "posting_rate_attempts",
        sa.Column("user_id", sa.String(length=255), primary_key=True),
        sa.Column("attempt_id", sa.String(length=255), primary_key=True),
        sa.Column("charged_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("posting_rate_attempts")
    op.drop_table("posting_rate_buckets")
