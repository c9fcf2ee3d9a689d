"""Marketplace: jobs for contractors, job requests, offers, engagements; saga kinds

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 16:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _at(name: str, *, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _str(name: str, length: int) -> sa.Column:
    return sa.Column(name, sa.String(length), nullable=False)


def upgrade() -> None:
    # One saga engine, several kinds of global transaction (pay-to-post, marketplace offer).
    op.add_column(
        "sagas",
        sa.Column("kind", sa.String(16), nullable=False, server_default="posting"),
    )
    op.create_table(
        "market_jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        _str("category", 64),
        sa.Column("budget_minor", sa.BigInteger(), nullable=False),
        _str("currency", 16),
        sa.Column("status", sa.String(16), nullable=False),
        _str("contractor_id", 128),
        _str("engagement_id", 64),
        _str("accepting_offer_id", 64),
        _str("create_request_id", 255),
        _at("created_at", nullable=False),
        _at("updated_at", nullable=False),
        sa.CheckConstraint(
            "status IN ('open', 'assigned', 'closed')", name="ck_market_jobs_status"
        ),
        sa.CheckConstraint("budget_minor >= 0", name="ck_market_jobs_budget"),
    )
    op.create_index(
        "ix_market_jobs_open",
        "market_jobs",
        ["created_at", "id"],
        postgresql_where=sa.text("status = 'open'"),
    )
    op.create_index("ix_market_jobs_customer", "market_jobs", ["customer_id", "created_at", "id"])
    op.create_index(
        "uq_market_jobs_customer_request",
        "market_jobs",
        ["customer_id", "create_request_id"],
        unique=True,
        postgresql_where=sa.text("create_request_id <> ''"),
    )
    op.create_table(
        "job_requests",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("market_jobs.id"), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("contractor_id", sa.String(128), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _at("created_at", nullable=False),
        _at("updated_at", nullable=False),
        _at("decided_at"),
        sa.UniqueConstraint("job_id", "contractor_id", name="uq_job_requests_job_contractor"),
        sa.CheckConstraint(
            "status IN ('pending', 'accepted', 'rejected')", name="ck_job_requests_status"
        ),
    )
    op.create_index("ix_job_requests_contractor", "job_requests", ["contractor_id", "created_at"])
    op.create_index("ix_job_requests_job", "job_requests", ["job_id", "created_at"])
    op.create_table(
        "offers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("market_jobs.id"), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("contractor_id", sa.String(128), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("funding", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("saga_id", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(255), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        _str("payment_id", 128),
        _str("engagement_id", 64),
        _str("reason", 64),
        _at("expires_at", nullable=False),
        _at("created_at", nullable=False),
        _at("updated_at", nullable=False),
        _at("decided_at"),
        _at("released_at"),
        sa.UniqueConstraint("customer_id", "request_id", name="uq_offers_customer_request"),
        sa.UniqueConstraint("saga_id", name="uq_offers_saga"),
        sa.CheckConstraint("amount_minor > 0", name="ck_offers_amount"),
        sa.CheckConstraint("funding IN ('card', 'coins')", name="ck_offers_funding"),
        sa.CheckConstraint(
            "state IN ('reserving', 'pending', 'accepting', 'accepted', 'rejected', 'expired',"
            " 'withdrawn', 'failed')",
            name="ck_offers_state",
        ),
    )
    op.create_index("ix_offers_job", "offers", ["job_id", "created_at"])
    op.create_index("ix_offers_contractor", "offers", ["contractor_id", "created_at"])
    op.create_index("ix_offers_customer", "offers", ["customer_id", "created_at"])
    op.create_table(
        "engagements",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("market_jobs.id"), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("contractor_id", sa.String(128), nullable=False),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("fee1_minor", sa.BigInteger(), nullable=False),
        sa.Column("escrow_minor", sa.BigInteger(), nullable=False),
        sa.Column("funding", sa.String(16), nullable=False),
        sa.Column("funding_state", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        _str("offer_id", 64),
        _str("escrow_account_id", 64),
        _str("payment_id", 128),
        _at("created_at", nullable=False),
        _at("updated_at", nullable=False),
        _at("assigned_at"),
        _at("started_at"),
        _at("finished_at"),
        # The money rule of funding: fee1 + escrow == A, nothing negative.
        sa.CheckConstraint(
            "amount_minor > 0 AND fee1_minor >= 0 AND escrow_minor >= 0"
            " AND fee1_minor + escrow_minor = amount_minor",
            name="ck_engagements_split",
        ),
        sa.CheckConstraint(
            "state IN ('open', 'assigned', 'in_progress', 'completed', 'cancelled', 'disputed')",
            name="ck_engagements_state",
        ),
    )
    op.create_index(
        "uq_engagements_job_live",
        "engagements",
        ["job_id"],
        unique=True,
        postgresql_where=sa.text("state IN ('assigned', 'in_progress', 'disputed', 'completed')"),
    )
    op.create_index("ix_engagements_customer", "engagements", ["customer_id", "created_at"])
    op.create_index("ix_engagements_contractor", "engagements", ["contractor_id", "created_at"])
    op.create_table(
        "engagement_transitions",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("engagement_id", sa.String(64), sa.ForeignKey("engagements.id"), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=True),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        _at("at", nullable=False),
    )
    op.create_index(
        "ix_engagement_transitions_engagement_id", "engagement_transitions", ["engagement_id"]
    )
    # Append-only like job_transitions (the function comes from 0001).
    op.execute(
        "CREATE TRIGGER engagement_transitions_append_only BEFORE UPDATE OR DELETE ON "
        "engagement_transitions FOR EACH ROW EXECUTE FUNCTION hirepay_refuse_change()"
    )


def downgrade() -> None:
    op.execute(
        "DROP TRIGGER IF EXISTS engagement_transitions_append_only ON engagement_transitions"
    )
    op.drop_table("engagement_transitions")
    op.drop_table("engagements")
    op.drop_table("offers")
    op.drop_table("job_requests")
    op.drop_table("market_jobs")
    op.drop_column("sagas", "kind")
