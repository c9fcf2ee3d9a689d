"""The TCC barrier becomes the platform's table (hirepay_platform.barrier.barrier_table): bounded
id columns (varchar 200 / 16, the platform allows ids of at most 128 characters) and an empty
fingerprint by default. Names of the table, its key and its checks are unchanged.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for column in ("global_tx_id", "branch_id"):
        op.alter_column("tcc_barriers", column, type_=sa.String(200), existing_nullable=False)
    for column in ("op", "origin"):
        op.alter_column("tcc_barriers", column, type_=sa.String(16), existing_nullable=False)
    op.alter_column(
        "tcc_barriers", "fingerprint", server_default=sa.text("'{}'"), existing_nullable=False
    )


def downgrade() -> None:
    op.alter_column("tcc_barriers", "fingerprint", server_default=None, existing_nullable=False)
    for column in ("global_tx_id", "branch_id", "op", "origin"):
        op.alter_column("tcc_barriers", column, type_=sa.Text(), existing_nullable=False)
