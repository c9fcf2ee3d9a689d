"""Indexes for the per-posting reads that read a company's whole history (issue 13)

PAY-14's abuse rule counted a company's failed payments by reading every saga of the company, and
each charged posting attempt looked for its user's expired attempts among all of them: the cost of
a posting grew with the company's history. The abuse rule now reads only failed sagas
(`ix_sagas_company_failed`), the forgetting only expired attempts
(`ix_posting_rate_attempts_charged`).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 04:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_sagas_company_failed",
        "sagas",
        ["company_id", "created_at"],
        postgresql_where=sa.text("failure <> 'null'::jsonb"),  # no failure is JSON null
    )
    op.create_index(
        "ix_posting_rate_attempts_charged", "posting_rate_attempts", ["user_id", "charged_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_posting_rate_attempts_charged", table_name="posting_rate_attempts")
    op.drop_index("ix_sagas_company_failed", table_name="sagas")
