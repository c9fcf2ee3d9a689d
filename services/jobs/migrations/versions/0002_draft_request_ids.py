"""CreateDraft idempotent on the caller's request_id

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 22:25:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("create_request_id", sa.String(length=255), nullable=False, server_default=""),
    )
    op.create_index(
        "uq_jobs_company_create_request",
        "jobs",
        ["company_id", "create_request_id"],
        unique=True,
        postgresql_where=sa.text("create_request_id <> ''"),
    )


def downgrade() -> None:
    op.drop_index("uq_jobs_company_create_request", table_name="jobs")
    op.drop_column("jobs", "create_request_id")
