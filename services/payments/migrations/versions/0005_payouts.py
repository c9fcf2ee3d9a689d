"""Payouts (ESC-9): payout accounts at the provider and withdrawals with their state machine.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 16:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "payout_accounts",
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("provider_account_id", sa.String(100), nullable=False, unique=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("onboarding_url", sa.Text(), nullable=False, server_default=""),
        _ts("created_at"),
        _ts("updated_at"),
    )
    op.create_table(
        "withdrawals",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("provider_account_id", sa.String(100), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False, server_default=""),
        sa.Column("transfer_id", sa.String(100), nullable=False, server_default=""),
        sa.Column("payout_id", sa.String(100), nullable=False, server_default=""),
        sa.Column("reversal_id", sa.String(100), nullable=False, server_default=""),
        sa.Column("failure_code", sa.String(64), nullable=False, server_default=""),
        sa.Column("failure_message", sa.Text(), nullable=False, server_default=""),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=False, server_default=""),
        _ts("next_attempt_at"),
        _ts("created_at"),
        _ts("updated_at"),
        sa.UniqueConstraint("user_id", "request_id", name="uq_withdrawals_user_request"),
        sa.CheckConstraint("amount_minor > 0", name="ck_withdrawals_amount_positive"),
    )
    op.create_index("ix_withdrawals_user_created", "withdrawals", ["user_id", "created_at"])
    op.create_index("ix_withdrawals_payout", "withdrawals", ["payout_id"])
    op.create_index(
        "ix_withdrawals_due",
        "withdrawals",
        ["next_attempt_at"],
        postgresql_where=sa.text("state IN ('requested', 'sending', 'in_transit')"),
    )


def downgrade() -> None:
    op.drop_table("withdrawals")
    op.drop_table("payout_accounts")
