"""Refunds take back the coins their payment issued (ESC-1, ESC-3): the coins a refund takes back
and where its hold on the buyer's coin wallet stands (branch `refund:<refund id>`).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 22:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "refunds", sa.Column("coins", sa.BigInteger(), nullable=False, server_default="0")
    )
    op.add_column(
        "refunds", sa.Column("coins_state", sa.String(16), nullable=False, server_default="")
    )


def downgrade() -> None:
    op.drop_column("refunds", "coins_state")
    op.drop_column("refunds", "coins")
