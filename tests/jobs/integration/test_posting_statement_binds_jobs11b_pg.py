"""A posting's first statement binds its transitions row by row and its abuse reasons as one
string, not as arrays (issue 13), on real PostgreSQL: the rows written are exactly those the
arrays wrote, for 1..N transitions (PAY-15's trail, in order), PAY-14's rule counts the same
failed payments, and asyncpg checks no element of an array parameter in Python."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text

from hirepay_platform.reasons import FailureReason
from jobs.adapters import repositories
from jobs.adapters.unit_of_work import SqlJobsUnitOfWork
from jobs.domain.model import Job, JobStatus, Transition
from jobs.domain.posting_saga import ABUSE_REASONS, PaymentMethod, Saga, SagaError, SagaState
from tests.support.asyncpg_checks import asyncpg_abstract_checks
from tests.support.jobs_world import FIELDS
from tests.support.python_calls import profiled

_NOW = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
_OFFSET = timezone(timedelta(hours=5, minutes=30))


@pytest.fixture
def connections() -> tuple[int, int]:
    # One connection: what the test counts runs on the connection its warm-up prepared.
    return 1, 0


def _saga(key: str, company: str, job_id: str = "", **fields: Any) -> Saga:
    fields.setdefault("state", SagaState.TRYING)
    return Saga(
        id=f"saga_{key}",
        company_id=company,
        request_id=key,
        fingerprint="fp",
        actor=company,
        method=PaymentMethod.CARD,
        created_at=_NOW,
        updated_at=_NOW,
        deadline_at=_NOW + timedelta(minutes=15),
        job_id=job_id,
        **fields,
    )


def _posting(key: str, n: int, company: str = "co_binds") -> tuple[Saga, Job]:
    """A new job with `n` pending transitions of every kind of value (no from_status, quotes,
    non-ASCII, long text, microseconds, another offset), each one different."""
    job = Job.new_draft(f"job_{key}", company, FIELDS, "alice", _NOW)
    first = job.pending[0]
    job.pending = [
        replace(
            first,
            from_status=None if i == 0 else JobStatus.DRAFT,
            to_status=JobStatus.DRAFT if i == 0 else JobStatus.PENDING_PAYMENT,
            actor=f"actor {i} é\"'",
            reason=("r" * 500 if i % 3 == 2 else f"reason {i} ,{{}}\\"),
            at=(_NOW + timedelta(microseconds=i)).astimezone(UTC if i % 2 else _OFFSET),
        )
        for i in range(n)
    ]
    return _saga(key, company, job.id), job


async def _insert(sessions, saga: Saga, job: Job, **kw: Any) -> tuple[bool, int]:
    async with SqlJobsUnitOfWork(sessions) as uow:
        return await uow.sagas.insert_posting(saga, job, "detail", **kw)


async def _transitions(sessions, job_id: str) -> list[tuple[Any, ...]]:
    """The job's transitions as stored, in the order of their ids (as the trail reads them)."""
    async with SqlJobsUnitOfWork(sessions) as uow:
        rows = await uow.session.execute(
            text(
                "SELECT from_status, to_status, actor, reason, at FROM job_transitions"
                " WHERE job_id = :job ORDER BY id"
            ),
            {"job": job_id},
        )
        return [tuple(row) for row in rows]


def _expected(transitions: list[Transition]) -> list[tuple[Any, ...]]:
    return [
        (
            str(t.from_status) if t.from_status else None,
            str(t.to_status),
            t.actor,
            t.reason,
            t.at,
        )
        for t in transitions
    ]


@pytest.mark.parametrize("n", range(1, repositories._FEW_TRANSITIONS + 2))
async def test_the_transitions_are_written_as_the_arrays_write_them(sessions, monkeypatch, n):
    """The same transitions posted row by row and as arrays (the shape past a few rows, forced
    here for every number) are read back equal, each as given, in the order given."""
    written = {}
    for way, few in (("rows", repositories._FEW_TRANSITIONS), ("arrays", 0)):
        monkeypatch.setattr(repositories, "_FEW_TRANSITIONS", few)
        saga, job = _posting(f"{way}_{n}", n)
        given = list(job.pending)
        assert await _insert(sessions, saga, job) == (True, 0)
        written[way] = await _transitions(sessions, job.id)
        assert written[way] == _expected(given)
        assert job.pending == []  # drained once inserted
    assert written["rows"] == written["arrays"]


@pytest.mark.parametrize("counting", [False, True])
async def test_a_taken_key_writes_no_transition(sessions, counting):
    since = {"failures_since": _NOW - timedelta(hours=1)} if counting else {}
    saga, job = _posting("taken", 2)
    assert await _insert(sessions, saga, job, reasons=ABUSE_REASONS, max_failures=9, **since)
    twin_saga, twin = _posting("taken", 3)
    twin.id = twin_saga.job_id = "job_twin"
    twin.pending = [replace(t, job_id=twin.id) for t in twin.pending]
    assert not (await _insert(sessions, twin_saga, twin, **since))[0]
    assert await _transitions(sessions, twin.id) == []
    assert len(await _transitions(sessions, job.id)) == 2


async def _failed(sessions, company: str, reasons: list[str]) -> None:
    async with SqlJobsUnitOfWork(sessions) as uow:
        for i, reason in enumerate(reasons):
            saga = _saga(
                f"failed_{company}_{i}",
                company,
                state=SagaState.FAILED,
                failure=SagaError("FAILED_PRECONDITION", reason, "failed"),
            )
            await uow.sagas.insert(saga)
        await uow.commit()


async def test_the_abuse_rule_counts_each_of_its_reasons_and_no_other(sessions):
    """PAY-14: every reason of the rule counts, others (and a reason's mere prefix) do not;
    the posting's statement and the insert-first alone count alike."""
    company = "co_abuse"
    others = [FailureReason.PAYMENT_TIMEOUT, "PAYMENT", "PAYMENT_DECLINED,INSUFFICIENT_FUNDS", ""]
    await _failed(sessions, company, [*sorted(ABUSE_REASONS), *others])
    since = _NOW - timedelta(hours=1)
    for i, (reasons, counted) in enumerate(
        [
            (ABUSE_REASONS, len(ABUSE_REASONS)),
            (frozenset({FailureReason.PAYMENT_DECLINED}), 1),
            (frozenset({FailureReason.PAYMENT_TIMEOUT, FailureReason.INSUFFICIENT_FUNDS}), 2),
            (frozenset(), 0),
        ]
    ):
        saga, job = _posting(f"abuse_{i}", 2, company)
        inserted, failures = await _insert(
            sessions, saga, job, failures_since=since, reasons=reasons, max_failures=99
        )
        assert (inserted, failures) == (True, counted), reasons
        async with SqlJobsUnitOfWork(sessions) as uow:
            alone = await uow.sagas.insert_counting_failures(
                _saga(f"alone_{i}", company), since, reasons
            )
            await uow.commit()
        assert alone == counted, reasons
    # At the limit, nothing is inserted.
    saga, job = _posting("abuse_blocked", 2, company)
    assert await _insert(
        sessions, saga, job, failures_since=since, reasons=ABUSE_REASONS, max_failures=4
    ) == (False, 4)
    assert await _transitions(sessions, job.id) == []


async def test_a_postings_statement_sends_no_array_for_asyncpg_to_check(sessions):
    """A posting's first statement as the request sends it (two transitions, the abuse rule's
    reasons): no element of an array parameter checked in Python (50 checks as arrays)."""
    since = _NOW - timedelta(hours=1)
    kw: dict[str, Any] = {"failures_since": since, "reasons": ABUSE_REASONS, "max_failures": 9}
    saga, job = _posting("warm", 2)
    await _insert(sessions, saga, job, **kw)  # compiled and prepared
    saga, job = _posting("measured", 2)
    with profiled() as profile:
        inserted = await _insert(sessions, saga, job, **kw)
    assert inserted == (True, 0)
    assert asyncpg_abstract_checks(profile) == 0
