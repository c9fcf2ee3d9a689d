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
    PrimaryKeyConstraint,
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
    # Moved by PostgreSQL on every UPDATE (trigger jobs_version, migration 0010): the guard of
    # a saga step written on rows as stored (issue 13).
    Column("version", BigInteger, nullable=False, server_default="0"),
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

# One status change of a job (append-only; a trigger refuses UPDATE and DELETE). Its one index is
# its primary key by job, a job's history in order (migration 0012); `id` comes from its sequence.
job_transitions = Table(
    "job_transitions",
    metadata,
    Column("id", BigInteger, autoincrement=True),
    Column("job_id", ForeignKey("jobs.id"), nullable=False),
    Column("from_status", String(32)),
    Column("to_status", String(32), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("reason", Text, nullable=False),
    _at("at", nullable=False),
    PrimaryKeyConstraint("job_id", "id", name="job_transitions_pkey"),
)

# The partial indexes' conditions on sagas, for queries to say in these very words: the planner
# uses a partial index only for a query whose conditions imply its own, and a condition sent as
# parameters (an IN list is) implies nothing to a generic plan (issue 13: the recovery worker's
# once-a-second queries read the whole table).
UNFINISHED_SAGA = text("state NOT IN ('completed', 'failed', 'refunded')")
# A saga with no failure holds JSON null (SQLAlchemy's JSON type binds None so), not SQL NULL.
FAILED_SAGA = text("failure <> 'null'::jsonb")

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
    # Which global transaction (posting, offer); added by migration 0005.
    Column("kind", String(16), nullable=False, default="posting", server_default="posting"),
    # Moved by PostgreSQL on every UPDATE (trigger sagas_version, migration 0010).
    Column("version", BigInteger, nullable=False, server_default="0"),
    # Idempotency keys are scoped to the caller (PAY-8); insert-first on this key.
    UniqueConstraint("company_id", "request_id", name="uq_sagas_company_request"),
    # The recovery worker's scan of unfinished sagas.
    Index("ix_sagas_unfinished", "next_attempt_at", postgresql_where=UNFINISHED_SAGA),
    # PAY-14's abuse rule counts a company's recent failed payments: only failed sagas, not
    # every saga of the company (issue 13: the count read all of them, on every posting).
    Index("ix_sagas_company_failed", "company_id", "created_at", postgresql_where=FAILED_SAGA),
)

# One step of a saga as it happened (append-only audit of the saga log). Only appended to, by
# every step of every posting: no index by saga (nothing reads it so; issue 13, migration 0009).
saga_log = Table(
    "saga_log",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("saga_id", ForeignKey("sagas.id"), nullable=False),
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
    # Each charged attempt forgets its user's attempts past the horizon: only those are read.
    Index("ix_posting_rate_attempts_charged", "user_id", "charged_at"),
)


# A job a customer posts for contractors (marketplace, no posting fee).
market_jobs = Table(
    "market_jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("customer_id", String(128), nullable=False),
    Column("title", String(200), nullable=False),
    Column("description", Text, nullable=False),
    _str("category", 64),
    Column("budget_minor", BigInteger, nullable=False, default=0),
    _str("currency", 16),
    Column("status", String(16), nullable=False),
    _str("contractor_id", 128),
    _str("engagement_id", 64),
    # The one offer whose acceptance holds the job (the acceptance lock).
    _str("accepting_offer_id", 64),
    _str("create_request_id", 255),
    _at("created_at", nullable=False),
    _at("updated_at", nullable=False),
    Index("ix_market_jobs_open", "created_at", "id", postgresql_where=text("status = 'open'")),
    Index("ix_market_jobs_customer", "customer_id", "created_at", "id"),
    Index(
        "uq_market_jobs_customer_request",
        "customer_id",
        "create_request_id",
        unique=True,
        postgresql_where=text("create_request_id <> ''"),
    ),
)

# A contractor's request to work on a marketplace job (ESC-10): one per job and contractor.
job_requests = Table(
    "job_requests",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("job_id", String(64), ForeignKey("market_jobs.id"), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("contractor_id", String(128), nullable=False),
    Column("message", Text, nullable=False, default=""),
    Column("status", String(16), nullable=False),
    _at("created_at", nullable=False),
    _at("updated_at", nullable=False),
    _at("decided_at"),
    UniqueConstraint("job_id", "contractor_id", name="uq_job_requests_job_contractor"),
    Index("ix_job_requests_contractor", "contractor_id", "created_at"),
    Index("ix_job_requests_job", "job_id", "created_at"),
)

# An offer of a customer to a contractor; its money is the saga `saga_id` (kind offer).
offers = Table(
    "offers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("job_id", String(64), ForeignKey("market_jobs.id"), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("contractor_id", String(128), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("unit", String(16), nullable=False),
    Column("funding", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("saga_id", String(64), nullable=False),
    Column("request_id", String(255), nullable=False),
    Column("message", Text, nullable=False, default=""),
    _str("payment_id", 128),
    _str("engagement_id", 64),
    _str("reason", 64),
    _at("expires_at", nullable=False),
    _at("created_at", nullable=False),
    _at("updated_at", nullable=False),
    _at("decided_at"),
    # When its reservation was released (void / hold cancelled); unset while held or captured.
    _at("released_at"),
    UniqueConstraint("customer_id", "request_id", name="uq_offers_customer_request"),
    UniqueConstraint("saga_id", name="uq_offers_saga"),
    Index("ix_offers_job", "job_id", "created_at"),
    Index("ix_offers_contractor", "contractor_id", "created_at"),
    Index("ix_offers_customer", "customer_id", "created_at"),
)

# The money of one piece of work (ESC-6..8): amount, fee1, escrow, who, and its state.
engagements = Table(
    "engagements",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("job_id", String(64), ForeignKey("market_jobs.id"), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("contractor_id", String(128), nullable=False),
    Column("unit", String(16), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("fee1_minor", BigInteger, nullable=False),
    Column("escrow_minor", BigInteger, nullable=False),
    Column("funding", String(16), nullable=False),
    Column("funding_state", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    _str("offer_id", 64),
    _str("escrow_account_id", 64),
    _str("payment_id", 128),
    _at("created_at", nullable=False),
    _at("updated_at", nullable=False),
    _at("assigned_at"),
    _at("started_at"),
    _at("finished_at"),
    # At most one funded, live or completed engagement per job.
    Index(
        "uq_engagements_job_live",
        "job_id",
        unique=True,
        postgresql_where=text("state IN ('assigned', 'in_progress', 'disputed', 'completed')"),
    ),
    Index("ix_engagements_customer", "customer_id", "created_at"),
    Index("ix_engagements_contractor", "contractor_id", "created_at"),
)

# One state change of an engagement (append-only).
engagement_transitions = Table(
    "engagement_transitions",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("engagement_id", ForeignKey("engagements.id"), nullable=False, index=True),
    Column("from_state", String(16)),
    Column("to_state", String(16), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("reason", Text, nullable=False),
    _at("at", nullable=False),
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
    # The callback relay's due events in cursor order, undelivered ones only (migration 0008); its
    # one index (0013).
    Index(
        "ix_marketplace_events_callbacks_due",
        "cursor",
        postgresql_where=text("callback_next_at IS NOT NULL"),
    ),
)

# The money step that ends (or, for a coin job payment, funds) an engagement: recorded pending in
# the transaction that decides it, driven to done by the request and, after a crash or a lost
# answer, by the escrow recovery worker (every call idempotent on its transfer / request id).
engagement_steps = Table(
    "engagement_steps",
    metadata,
    Column("engagement_id", String(64), ForeignKey("engagements.id"), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("transfer_id", String(200), nullable=False),
    # [{"from": {"owner", "unit", "kind"}, "to": {...}, "amount_minor": n}, ...]
    Column("legs", JSONB, nullable=False),
    _str("payment_id", 128),
    Column("refund_minor", BigInteger, nullable=False, default=0),
    _str("refund_id", 128),
    Column("attempts", Integer, nullable=False, default=0),
    _at("next_attempt_at"),
    Column("failure", Text, nullable=False, default=""),
    _at("created_at", nullable=False),
    _at("updated_at", nullable=False),
    # The card refund the provider refused outright, booked to the receivable (migration 0016).
    Column("refused_minor", BigInteger, nullable=False, default=0, server_default="0"),
    Index(
        "ix_engagement_steps_due",
        "next_attempt_at",
        postgresql_where=text("state = 'pending'"),
    ),
)

# A refund of an engagement's card money made at the provider, outside the escrow (migration
# 0015): recorded once per payments refund id under the engagement's lock, with the legs that book
# it under `payment:<pid>:refund:<refund_id>` (unwound from the escrow, or owed), then posted.
escrow_refunds = Table(
    "escrow_refunds",
    metadata,
    Column("refund_id", String(128), primary_key=True),
    Column("engagement_id", String(64), ForeignKey("engagements.id"), nullable=False),
    Column("payment_id", String(128), nullable=False),
    Column("unit", String(16), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("legs", JSONB, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("failure", Text, nullable=False, default=""),
    _at("created_at", nullable=False),
    _at("updated_at", nullable=False),
    # An operator's settlement of the receivable (outcome `settled`, migration 0016): the
    # operator's reference (e.g. the bank transfer's) and who recorded it.
    Column("reference", Text, nullable=False, default="", server_default=""),
    Column("actor", String(128), nullable=False, default="", server_default=""),
    Index("ix_escrow_refunds_engagement", "engagement_id", "created_at"),
)

# A dispute on an engagement (ESC-8): at most one per engagement, resolved once by an admin.
disputes = Table(
    "disputes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("engagement_id", String(64), ForeignKey("engagements.id"), nullable=False, unique=True),
    Column("opened_by", String(128), nullable=False),
    Column("reason", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("engagement_state", String(16), nullable=False),
    _str("resolution", 16),
    Column("contractor_minor", BigInteger, nullable=False, default=0),
    _str("resolved_by", 128),
    Column("note", Text, nullable=False, default=""),
    _at("opened_at", nullable=False),
    _at("resolved_at"),
    Index("ix_disputes_state_opened", "state", "opened_at", "id"),
)
