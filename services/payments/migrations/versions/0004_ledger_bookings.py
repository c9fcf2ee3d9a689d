"""Every cent on the ledger (ESC-1): the credit grants of plan purchases become the ledger bookings
of every captured payment and refund (provider, payment, refund, legs); a purchase's money goes
through its provider's clearing account.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("credit_grants", "user_type", existing_type=sa.String(16), nullable=True)
    op.add_column(
        "credit_grants",
        sa.Column("provider", sa.String(32), nullable=False, server_default=""),
    )
    op.add_column(
        "credit_grants",
        sa.Column("payment_id", sa.String(64), nullable=False, server_default=""),
    )
    op.add_column(
        "credit_grants",
        sa.Column("refund_id", sa.String(64), nullable=False, server_default=""),
    )
    op.add_column("credit_grants", sa.Column("legs", postgresql.JSONB(), nullable=True))
    op.create_index("ix_credit_grants_payment", "credit_grants", ["payment_id"])
    # A purchase's grant books through the clearing of the provider the purchase was paid with.
    op.execute(
        "UPDATE credit_grants g SET provider = t.provider FROM transactions t"
        " WHERE t.id = g.transaction_id"
    )


def downgrade() -> None:
    op.drop_index("ix_credit_grants_payment", table_name="credit_grants")
    for column in ("legs", "refund_id", "payment_id", "provider"):
        op.drop_column("credit_grants", column)
    op.execute("DELETE FROM credit_grants WHERE user_type IS NULL")
    op.alter_column("credit_grants", "user_type", existing_type=sa.String(16), nullable=False)
