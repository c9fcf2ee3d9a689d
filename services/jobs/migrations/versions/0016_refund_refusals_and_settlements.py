"""Offer-money refunds the provider refused outright, and receivables settled by operators
(ESC-1, ESC-8): a money step records what its refused refund booked to the receivable instead;
an escrow_refunds row of an operator's settlement keeps its reference and who recorded it.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 09:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Constant defaults: PostgreSQL adds such columns without rewriting the tables.
    op.add_column(
        "engagement_steps",
        sa.Column("refused_minor", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.add_column(
        "escrow_refunds", sa.Column("reference", sa.Text, nullable=False, server_default="")
    )
    op.add_column(
        "escrow_refunds", sa.Column("actor", sa.String(128), nullable=False, server_default="")
    )


def downgrade() -> None:
    op.drop_column("escrow_refunds", "actor")
    op.drop_column("escrow_refunds", "reference")
    op.drop_column("engagement_steps", "refused_minor")
