"""Tables of the jobs database as SQLAlchemy Core `Table`s (the schema itself lives in migrations).

Core tables, not ORM classes: repositories build plain statements and read rows, which keeps
statement building off the ORM's per-object work on the saga's hot path.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()


def _at(name: str, *, nullable: bool = True) -> Column:
    """A timezone-aware timestamp column."""
    return Column(name, DateTime(timezone=True), nullable=nullable)


def _str(name: str, length: int) -> Column:
    """A required string column that defaults to empty."""
    return Column(name, String(length), nullable=False, default="")


# A job draft or posting.
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("company_id", String(128), nullable=False),
    Column("title", String(200), nullable=False),
    Column("description", Text, nullable=False),
    Column("location", String(200), nullable=False),
    Column("employment_type", String(32), nullable=False),
    Column("category", String(64), nullable=False),
    Column("salary_min_minor", BigInteger, nullable=False, default=0),
    Column("salary_max_minor", BigInteger, nullable=False, default=0),
    _str("salary_currency", 3),
    Column("status", String(32), nullable=False),
    _str("payment_id", 128),
    Column("payment_status", String(16)),
    Column("payment_amount_minor", BigInteger, nullable=False, default=0),
    _str("payment_currency", 16),
    _str("payment_method", 32),
    _at("posted_at"),
    _at("expires_at"),
    _str("terms_version", 64),
    _str("failure_reason", 64),
    _str("saga_id", 64),
    # Added by migration 0002 with a server default, so rows that existed then read as "no key".
    Column("create_request_id", String(255), nullable=False, default="", server_default=""),
    _at("created_at", nullable=False),
    _at("updated_at", nullable=False),
    # The public list: active jobs, newest posting first.
    Index("ix_jobs_active_posted", "posted_at", "id", postgresql_where=text("status = 'active'")),
    Index("ix_jobs_company_created", "company_id", "created_at", "id"),
    # CreateDraft is idempotent on the caller's request_id (insert-first on this key).
    Index(
        "uq_jobs_company_create_request",
        "company_id",
        "create_request_id",
        unique=True,
        postgresql_where=text("create_request_id <> ''"),
    ),
    # The expiry worker's scan.
    Index("ix_jobs_active_expires", "expires_at", postgresql_where=text("status = 'active'")),
)

# One status change of a job (append-only; a trigger refuses UPDATE and DELETE).
job_transitions = Table(
    "job_transitions",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("job_id", ForeignKey("jobs.id"), nullable=False, index=True),
    Column("from_status", String(32)),
    Column("to_status", String(32), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("reason", Text, nullable=False),
    _at("at", nullable=False),
)

# The durable log row of one pay-to-post saga (its global transaction).
sagas = Table(
    "sagas",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("company_id", String(128), nullable=False),
    Column("request_id", String(255), nullable=False),
    Column("fingerprint", String(128), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("state", String(32), nullable=False),
    Column("method", String(32), nullable=False),
    _str("job_id", 64),
    Column("amount_minor", BigInteger, nullable=False, default=0),
    _str("currency", 16),
    _str("terms_version", 64),
    # A provider token (pm_...), never card data (SAQ A); needed to re-send a lost Try.
    _str("payment_token", 255),
    Column("return_url", Text, nullable=False, default=""),
    Column("cancel_url", Text, nullable=False, default=""),
    _str("email", 320),
    _str("payment_id", 128),
    _str("provider_state", 32),
    Column("next_action_url", Text, nullable=False, default=""),
    Column("activated", Boolean, nullable=False, default=False),
    Column("captured", Boolean, nullable=False, default=False),
    Column("refund_amount_minor", BigInteger, nullable=False, default=0),
    _str("refund_reason", 64),
    Column("failure", JSONB),
    Column("response", JSONB),
    Column("attempts", Integer, nullable=False, default=0),
    _at("next_attempt_at"),
    _str("lease_owner", 128),
    _at("lease_until"),
    _at("deadline_at", nullable=False),
    _at("created_at", nullable=False),
    _at("updated_at", nullable=False),
    _at("finished_at"),
    # Idempotency keys are scoped to the caller (PAY-8); insert-first on this key.
    UniqueConstraint("company_id", "request_id", name="uq_sagas_company_request"),
    # The recovery worker's scan of unfinished sagas.
    Index(
        "ix_sagas_unfinished",
        "next_attempt_at",
        postgresql_where=text("state NOT IN ('completed', 'failed', 'refunded')"),
    ),
)

# One step of a saga as it happened (append-only audit of the saga log).
saga_log = Table(
    "saga_log",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("saga_id", ForeignKey("sagas.id"), nullable=False, index=True),
    Column("step", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    _at("at", nullable=False),
)

# How far a consumer of the payments settlement stream has applied events.
settlement_cursors = Table(
    "settlement_cursors",
    metadata,
    Column("consumer", String(64), primary_key=True),
    Column("cursor", BigInteger, nullable=False, default=0),
    _at("updated_at", nullable=False),
)

# Applications of applicants to job postings (ESC-10): one per job and applicant.
applications = Table(
    "applications",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("job_id", String(64), ForeignKey("jobs.id"), nullable=False),
    Column("company_id", String(128), nullable=False),
    Column("applicant_id", String(128), nullable=False),
    Column("applicant_name", String(200), nullable=False),
    Column("applicant_email", String(320), nullable=False),
    Column("cover_letter", Text, nullable=False, default=""),
    Column("resume_url", Text, nullable=False, default=""),
    Column("status", String(16), nullable=False),
    _at("created_at", nullable=False),
    _at("updated_at", nullable=False),
    _at("decided_at"),
    UniqueConstraint("job_id", "applicant_id", name="uq_applications_job_applicant"),
    Index("ix_applications_applicant", "applicant_id", "created_at"),
    Index("ix_applications_job", "job_id", "created_at"),
)

# Candidate views (CR-3): the one paid view of an applicant by a company, recorded before the
# credit is debited (state charging) and marked charged once the wallet has taken it.
candidate_views = Table(
    "candidate_views",
    metadata,
    Column("company_id", String(128), primary_key=True),
    Column("applicant_id", String(128), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("transfer_id", String(128), nullable=False),
    _at("created_at", nullable=False),
    _at("charged_at"),
)

# The posting rate limit's token bucket per user (PAY-14), shared by every gateway replica.
posting_rate_buckets = Table(
    "posting_rate_buckets",
    metadata,
    Column("user_id", String(255), primary_key=True),
    Column("tokens", Float, nullable=False),
    _at("updated_at", nullable=False),
)

# Attempts already charged to a bucket: a retry with the same Idempotency-Key spends nothing.
posting_rate_attempts = Table(
    "posting_rate_attempts",
    metadata,
    Column("user_id", String(255), primary_key=True),
    Column("attempt_id", String(255), primary_key=True),
    _at("charged_at", nullable=False),
)

# Marketplace events to tell subsystems (issue 9 point 9): written in the transaction of the change
# (insert-first on the event id, so a replayed change writes nothing), delivered as signed
# callbacks by the notifier relay (hirepay_platform.notifier).
marketplace_events = Table(
    "marketplace_events",
    metadata,
    Column("cursor", BigInteger, Identity(), primary_key=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("type", String(64), nullable=False),
    Column("subject_id", String(64), nullable=False),
    Column("subsystem", String(64), nullable=False),
    Column("data", JSONB, nullable=False),
    _at("occurred_at", nullable=False),
    # NULL once nothing is due (delivered); the relay leases rows by moving it forward.
    _at("callback_next_at"),
    Column("callback_attempts", Integer, nullable=False, server_default="0"),
    _at("callback_delivered_at"),
    Index("ix_marketplace_events_subject", "subject_id", "cursor"),
    Index(
        "ix_marketplace_events_due",
        "callback_next_at",
        postgresql_where=text("callback_next_at IS NOT NULL"),
    ),
)
