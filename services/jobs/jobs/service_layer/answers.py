"""The stored answer of a saga: a snapshot of what CreateJobWithPayment returned, for replays."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobs.domain.model import Job, JobFields, JobStatus, PaymentStatus
from jobs.domain.posting_saga import Saga
from jobs.domain.rate_limits import RateDecision


@dataclass(frozen=True, slots=True)
class SagaAnswer:
    """What CreateJobWithPayment answers: the job as it was, and the payment's state."""

    job: Job
    saga_id: str
    payment_id: str
    payment_state: str
    next_action_url: str
    replayed: bool = False
    # The posting rate limit's decision on this request's attempt, when it spent one (PAY-14).
    rate_limit: RateDecision | None = None

    def with_rate_limit(self, decision: RateDecision) -> SagaAnswer:
        """This answer with the request's rate-limit decision: `dataclasses.replace` made
        generically (a look-up per field, about 9 Python calls per posting; issue 13).
        tests/jobs/unit/test_no_replace_jobs14.py checks every field is carried."""
        return SagaAnswer(
            job=self.job,
            saga_id=self.saga_id,
            payment_id=self.payment_id,
            payment_state=self.payment_state,
            next_action_url=self.next_action_url,
            replayed=self.replayed,
            rate_limit=decision,
        )


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def job_to_snapshot(job: Job) -> dict[str, Any]:
    """A job as plain JSON values."""
    return {
        "id": job.id,
        "company_id": job.company_id,
        "fields": job.fields.values(),
        "status": str(job.status),  # a StrEnum: its value, without the property's calls
        # (Each timestamp written here, not by _ts: four Python calls per answer fewer.)
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "updated_at": job.updated_at.isoformat() if job.updated_at else None,
        "payment_id": job.payment_id,
        "payment_status": str(job.payment_status) if job.payment_status else None,
        "payment_amount_minor": job.payment_amount_minor,
        "payment_currency": job.payment_currency,
        "payment_method": job.payment_method,
        "posted_at": job.posted_at.isoformat() if job.posted_at else None,
        "expires_at": job.expires_at.isoformat() if job.expires_at else None,
        "terms_version": job.terms_version,
        "failure_reason": job.failure_reason,
        "saga_id": job.saga_id,
        "create_request_id": job.create_request_id,
    }


def job_from_snapshot(data: dict[str, Any]) -> Job:
    """The job of a snapshot made by job_to_snapshot."""
    created = _dt(data["created_at"])
    updated = _dt(data["updated_at"])
    assert created is not None and updated is not None
    return Job(
        id=data["id"],
        company_id=data["company_id"],
        fields=JobFields(**data["fields"]),
        status=JobStatus(data["status"]),
        created_at=created,
        updated_at=updated,
        payment_id=data["payment_id"],
        payment_status=PaymentStatus(data["payment_status"]) if data["payment_status"] else None,
        payment_amount_minor=data["payment_amount_minor"],
        payment_currency=data["payment_currency"],
        payment_method=data["payment_method"],
        posted_at=_dt(data["posted_at"]),
        expires_at=_dt(data["expires_at"]),
        terms_version=data["terms_version"],
        failure_reason=data["failure_reason"],
        saga_id=data["saga_id"],
        create_request_id=data.get("create_request_id", ""),
    )


class _Snapshot(dict[str, Any]):
    """A snapshot made by this process (answer_to_snapshot), with the answer it was made of:
    stored, it is the plain JSON object it holds (the answer is not), and read back it is a
    plain dict."""

    __slots__ = ("answer",)

    def __init__(self, values: dict[str, Any], answer: SagaAnswer) -> None:
        super().__init__(values)
        self.answer = answer


def answer_to_snapshot(answer: SagaAnswer) -> dict[str, Any]:
    return _Snapshot(
        {
            "job": job_to_snapshot(answer.job),
            "saga_id": answer.saga_id,
            "payment_id": answer.payment_id,
            "payment_state": answer.payment_state,
            "next_action_url": answer.next_action_url,
        },
        answer,
    )


def answer_from_snapshot(data: dict[str, Any], *, replayed: bool) -> SagaAnswer:
    """The answer a snapshot holds. One this process made for the request it is answering (the
    request that drove its saga: `replayed` False) is the answer it was made of, not decoded
    again from its JSON values: the same values (tests/jobs/unit/test_answer_snapshot_pay13.py),
    about 17 Python calls per posting fewer (issue 13). Any other is decoded."""
    if not replayed and type(data) is _Snapshot:
        return data.answer
    return SagaAnswer(
        job=job_from_snapshot(data["job"]),
        saga_id=data["saga_id"],
        payment_id=data["payment_id"],
        payment_state=data["payment_state"],
        next_action_url=data["next_action_url"],
        replayed=replayed,
    )


def answer_for(saga: Saga, job: Job) -> SagaAnswer:
    """The answer describing a saga's job now."""
    return SagaAnswer(
        job=job,
        saga_id=saga.id,
        payment_id=saga.payment_id or job.payment_id,
        payment_state=saga.provider_state,
        next_action_url=saga.next_action_url if job.status is JobStatus.PENDING_PAYMENT else "",
    )
