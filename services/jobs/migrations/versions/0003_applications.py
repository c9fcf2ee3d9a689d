"""Applications to job postings (ESC-10) and paid candidate views (CR-3)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "applications",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("company_id", sa.String(128), nullable=False),
        sa.Column("applicant_id", sa.String(128), nullable=False),
        sa.Column("applicant_name", sa.String(200), nullable=False),
        sa.Column("applicant_email", sa.String(320), nullable=False),
        sa.Column("cover_letter", sa.Text(), nullable=False),
        sa.Column("resume_url", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("job_id", "applicant_id", name="uq_applications_job_applicant"),
        sa.CheckConstraint(
            "status IN ('pending', 'accepted', 'rejected')", name="ck_applications_status"
        ),
    )
    op.create_index("ix_applications_applicant", "applications", ["applicant_id", "created_at"])
    op.create_index("ix_applications_job", "applications", ["job_id", "created_at"])
    op.create_table(
        "candidate_views",
        sa.Column("company_id", sa.String(128), primary_key=True),
        sa.Column("applicant_id", sa.String(128), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("transfer_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("charged_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('charging', 'charged')", name="ck_candidate_views_state"),
    )


def downgrade() -> None:
    op.drop_table("candidate_views")
    op.drop_table("applications")
