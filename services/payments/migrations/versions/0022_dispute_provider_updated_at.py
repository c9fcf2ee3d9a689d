"""Disputes remember the provider's update time of the newest view applied
(`disputes.provider_updated_at`, PayPal's `update_time`; NULL for providers that do not say): two
events of one dispute re-fetched at different times may be applied in the other order, and the
older view must not set back a fee a newer one booked (handlers/disputes.py). A nullable column
without a default: no table rewrite.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-02 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "disputes", sa.Column("provider_updated_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("disputes", "provider_updated_at")
