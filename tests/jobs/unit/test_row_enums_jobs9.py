"""The rows' enum columns (issue 13: converted by lookup and str(), not `.value` and `Enum(v)`):
every member is written as its plain value and read back as the same member."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from jobs.adapters.repositories import (
    job_from_row,
    job_to_values,
    saga_from_row,
    saga_to_values,
    transition_to_values,
)
from jobs.domain.model import Job, JobFields, JobStatus, PaymentStatus, Transition
from jobs.domain.posting_saga import PaymentMethod, Saga, SagaKind, SagaState

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _exact_str(value: object) -> bool:
    return type(value) is str


@pytest.mark.parametrize("state", list(SagaState))
@pytest.mark.parametrize("method", list(PaymentMethod))
@pytest.mark.parametrize("kind", list(SagaKind))
def test_a_saga_row_round_trips_every_member(
    state: SagaState, method: PaymentMethod, kind: SagaKind
) -> None:
    saga = Saga(
        id="saga_1",
        company_id="c",
        request_id="r",
        fingerprint="f",
        actor="company:c",
        state=state,
        method=method,
        created_at=NOW,
        updated_at=NOW,
        deadline_at=NOW,
        kind=kind,
    )
    values = saga_to_values(saga)
    assert (values["state"], values["method"], values["kind"]) == (
        state.value,
        method.value,
        kind.value,
    )
    assert all(_exact_str(values[k]) for k in ("state", "method", "kind"))
    back = saga_from_row(SimpleNamespace(**values))
    assert (back.state, back.method, back.kind) == (state, method, kind)
    assert back == saga


@pytest.mark.parametrize("status", list(JobStatus))
@pytest.mark.parametrize("payment_status", [None, *PaymentStatus])
def test_a_job_row_round_trips_every_member(
    status: JobStatus, payment_status: PaymentStatus | None
) -> None:
    fields = JobFields(
        title="Data Engineer",
        description="Pipelines and SQL every day.",
        location="Berlin",
        employment_type="contract",
        category="engineering",
    )
    job = Job.new_draft("job_1", "c", fields, "company:c", NOW)
    job.status = status
    job.payment_status = payment_status
    values = job_to_values(job)
    assert values["status"] == status.value and _exact_str(values["status"])
    if payment_status is None:
        assert values["payment_status"] is None
    else:
        assert values["payment_status"] == payment_status.value
        assert _exact_str(values["payment_status"])
    back = job_from_row(SimpleNamespace(**values))
    assert (back.status, back.payment_status) == (status, payment_status)


def test_a_transition_row_has_plain_values() -> None:
    values = transition_to_values(
        Transition("job_1", JobStatus.DRAFT, JobStatus.PENDING_PAYMENT, "company:c", "", NOW)
    )
    assert (values["from_status"], values["to_status"]) == ("draft", "pending_payment")
    assert _exact_str(values["from_status"]) and _exact_str(values["to_status"])
    first = transition_to_values(Transition("job_1", None, JobStatus.DRAFT, "company:c", "", NOW))
    assert first["from_status"] is None
