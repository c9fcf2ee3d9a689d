"""Card disputes (chargebacks) reported by provider webhooks (`charge.dispute.*`).

`disputes`: one row per provider dispute (its id, e.g. Stripe's dp_...), the payment it disputes,
its status and the money its balance transactions moved so far (withdrawn, reinstated, the
provider's dispute fee). The ledger bookings of that money are `credit_grants` rows of kind
`dispute` (no new column: `refund_id` holds the balance transaction's id). Self-contained: another
branch may also write a 0019; the later one is renumbered.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02 01:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "disputes",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("payment_id", sa.String(64), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False, server_default=""),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("withdrawn_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("reinstated_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("fee_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_disputes_payment", "disputes", ["payment_id"])


def downgrade() -> None:
    op.drop_index("ix_disputes_payment", table_name="disputes")
    op.drop_table("disputes")
