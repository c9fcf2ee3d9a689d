"""Storage models of the jobs database (SQLAlchemy 2); relationships, if any, are lazy="raise"."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from hirepay_platform.db import Base


class JobsBase(Base):
    """Declarative base of the jobs service's own metadata."""

    __abstract__ = True


class JobRow(JobsBase):
    """A job draft or posting."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    company_id: Mapped[str] = mapped_column(String(128), nullable=False)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    location: Mapped[str] = mapped_column(String(200), nullable=False)
    employment_type: Mapped[str] = mapped_column(String(32), nullable=False)
    category: Mapped[str] = mapped_column(String(64), nullable=False)
    salary_min_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    salary_max_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    salary_currency: Mapped[str] = mapped_column(String(3), nullable=False, default="")
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    payment_id: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    payment_status: Mapped[str | None] = mapped_column(String(16))
    payment_amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    payment_currency: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    payment_method: Mapped[str] = mapped_column(String(32), nullable=False, default="")
    posted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    terms_version: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    failure_reason: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    saga_id: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    create_request_id: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    transitions: Mapped[list[JobTransitionRow]] = relationship(lazy="raise", viewonly=True)

    __table_args__ = (
        # The public list: active jobs, newest posting first.
        Index(
            "ix_jobs_active_posted",
            "posted_at",
            "id",
            postgresql_where=text("status = 'active'"),
        ),
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


class JobTransitionRow(JobsBase):
    """One status change of a job (append-only; a trigger refuses UPDATE and DELETE)."""

    __tablename__ = "job_transitions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), nullable=False, index=True)
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str] = mapped_column(String(32), nullable=False)
    actor: Mapped[str] = mapped_column(String(128), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class SagaRow(JobsBase):
    """The durable log row of one pay-to-post saga (its global transaction)."""

    __tablename__ = "sagas"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    company_id: Mapped[str] = mapped_column(String(128), nullable=False)
    request_id: Mapped[str] = mapped_column(String(255), nullable=False)
    fingerprint: Mapped[str] = mapped_column(String(128), nullable=False)
    actor: Mapped[str] = mapped_column(String(128), nullable=False)
    state: Mapped[str] = mapped_column(String(32), nullable=False)
    method: Mapped[str] = mapped_column(String(32), nullable=False)
    job_id: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    currency: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    terms_version: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    # A provider token (pm_...), never card data (SAQ A); needed to re-send a lost Try.
    payment_token: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    return_url: Mapped[str] = mapped_column(Text, nullable=False, default="")
    cancel_url: Mapped[str] = mapped_column(Text, nullable=False, default="")
    email: Mapped[str] = mapped_column(String(320), nullable=False, default="")
    payment_id: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    provider_state: Mapped[str] = mapped_column(String(32), nullable=False, default="")
    next_action_url: Mapped[str] = mapped_column(Text, nullable=False, default="")
    activated: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    captured: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    refund_amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    refund_reason: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    failure: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_owner: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deadline_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # Idempotency keys are scoped to the caller (PAY-8); insert-first on this key.
        UniqueConstraint("company_id", "request_id", name="uq_sagas_company_request"),
        # The recovery worker's scan of unfinished sagas.
        Index(
            "ix_sagas_unfinished",
            "next_attempt_at",
            postgresql_where=text("state NOT IN ('completed', 'failed', 'refunded')"),
        ),
    )


class SagaLogRow(JobsBase):
    """One step of a saga as it happened (append-only audit of the saga log)."""

    __tablename__ = "saga_log"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    saga_id: Mapped[str] = mapped_column(ForeignKey("sagas.id"), nullable=False, index=True)
    step: Mapped[str] = mapped_column(String(64), nullable=False)
    detail: Mapped[str] = mapped_column(Text, nullable=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class SettlementCursorRow(JobsBase):
    """How far a consumer of the payments settlement stream has applied events."""

    __tablename__ = "settlement_cursors"

    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    cursor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
