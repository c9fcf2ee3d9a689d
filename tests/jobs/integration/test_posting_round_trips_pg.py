"""What one posting costs the jobs database, pinned (issue 13): the round trips of a card posting's
happy path (rate limit, saga steps) counted on the wire's side of asyncpg, so a change that adds a
statement, a transaction or a re-prepared statement fails here. Also on real PostgreSQL: the
posting's first step (one statement) inserts nothing for a blocked company or a taken key."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from hirepay_platform.errors import HirepayError
from jobs.adapters.unit_of_work import SqlJobsUnitOfWork
from jobs.domain import commands
from jobs.domain.errors import PostingBlocked
from jobs.domain.model import JobStatus
from jobs.domain.posting_saga import Saga, SagaState
from jobs.service_layer.deps import Deps
from jobs.service_layer.handlers import cancellation, pay_to_post
from tests.support.jobs_fakes import FakeParticipants, make_config
from tests.support.jobs_world import FIELDS, declined_saga


@pytest.fixture
def connections() -> tuple[int, int]:
    # One connection: the measured posting runs on the connection the warm-up prepared.
    return 1, 0


def _deps(sessions, **config: Any) -> Deps:
    return Deps.build(
        lambda: SqlJobsUnitOfWork(sessions), make_config(**config), FakeParticipants()
    )


def _post(key: str, company: str = "co_rt") -> commands.CreateJobWithPayment:
    return commands.CreateJobWithPayment(
        request_id=key,
        actor=commands.Actor(company, "company"),
        payment=commands.PaymentChoice(method="card", payment_method_token="pm_card_visa"),
        accept_terms=True,
        fingerprint="fp",
        fields=FIELDS,
        rate_limit=commands.PostingRateLimit(1000, 60),
    )


async def test_a_card_postings_happy_path_costs_three_round_trips(sessions, round_trips):
    """Three statements, each a transaction of its own (no BEGIN, no COMMIT round trip): the rate
    limit's attempt with the saga's first step (saga, job, transitions, log line, abuse rule);
    the Try's answer and the Confirm (job live, answer stored), each written on the saga and job
    as the request stored them, checked unchanged and locked by the same statement. Every step is
    durable before the next participant call; nothing is prepared again once warm. (Before
    issue 13's round 4: 13 round trips, 7 statements in 3 BEGIN/COMMIT transactions; before its
    round 5: 4 statements, the rate limit's attempt alone.)"""
    deps = _deps(sessions)
    for i in range(2):  # warm: the bucket exists, every statement is prepared on the connection
        await pay_to_post.create_job_with_payment(_post(f"warm-{i}"), deps)
    round_trips.sent.clear()

    answer = await pay_to_post.create_job_with_payment(_post("measured"), deps)

    assert answer.job.status is JobStatus.ACTIVE and not answer.replayed
    assert round_trips.kinds() == {"statement": 3}, round_trips.sent
    async with deps.uow as uow:
        saga = await uow.sagas.get(answer.saga_id)
        job = await uow.jobs.get(answer.job.id)
        trail = [t.to_status for t in await uow.jobs.transitions(answer.job.id)]
        steps = await uow.session.execute(
            text("SELECT step FROM saga_log WHERE saga_id = :id ORDER BY id"), {"id": saga.id}
        )
        assert steps.scalars().all() == ["pending_payment", "confirming", "completed"]
    assert saga is not None and job is not None
    assert (saga.state, saga.captured, saga.activated, saga.lease_owner) == (
        SagaState.COMPLETED,
        True,
        True,
        "",
    )
    assert saga.response is not None and saga.response["job"]["status"] == "active"
    assert (job.status, job.payment_id) == (JobStatus.ACTIVE, saga.payment_id)
    assert trail == [JobStatus.DRAFT, JobStatus.PENDING_PAYMENT, JobStatus.ACTIVE]


async def test_the_first_step_inserts_nothing_for_a_blocked_company(sessions):
    """PAY-14's abuse rule inside the first step's statement: a company with too many recent
    failed payments is refused and nothing is inserted; its key, once taken, still replays."""
    deps = _deps(sessions, max_failed_payments=2, failed_payments_window_seconds=3600)
    first = await pay_to_post.create_job_with_payment(_post("before", "co_block"), deps)
    now = datetime.now(UTC)
    async with deps.uow as uow:  # two recent failed payments of the company
        for n in range(2):
            await uow.sagas.insert(
                declined_saga(f"saga_failed_{n}", "co_block", f"failed-{n}", now)
            )
        await uow.commit()

    with pytest.raises(PostingBlocked):
        await pay_to_post.create_job_with_payment(_post("blocked", "co_block"), deps)
    replayed = await pay_to_post.create_job_with_payment(_post("before", "co_block"), deps)

    assert replayed.replayed and replayed.job.id == first.job.id
    async with deps.uow as uow:
        assert await uow.sagas.get_by_key("co_block", "blocked") is None
        jobs = await uow.session.execute(text("SELECT count(*) FROM jobs"))
        assert jobs.scalar_one() == 1


async def test_a_taken_key_inserts_nothing_and_replays(sessions):
    deps = _deps(sessions)
    first = await pay_to_post.create_job_with_payment(_post("same"), deps)
    again = await pay_to_post.create_job_with_payment(_post("same"), deps)

    assert again.replayed and again.job.id == first.job.id
    async with deps.uow as uow:
        saga = await uow.sagas.get_by_key("co_rt", "same")
        assert saga is not None and saga.state is SagaState.COMPLETED
        counts = await uow.session.execute(
            text(
                "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM job_transitions), "
                "(SELECT count(*) FROM saga_log WHERE step = 'pending_payment')"
            )
        )
        # draft + pending_payment + active; one first log line.
        assert tuple(counts.one()) == (1, 3, 1)


async def test_a_step_on_rows_changed_meanwhile_is_taken_on_the_rows_read_under_lock(
    sessions, round_trips
):
    """The company cancels its job while the request's Confirm is in flight: the Confirm's step,
    written on the rows as the request stored them, finds them changed, writes nothing, and is
    taken again on the rows read under lock (BEGIN, locked read, writes, COMMIT): the job never
    goes live and the money taken is refunded (PAY-7), exactly as without the assumption."""
    participants = FakeParticipants()
    deps = Deps.build(lambda: SqlJobsUnitOfWork(sessions), make_config(), participants)
    confirm = participants.payments.confirm

    async def confirmed_while_cancelled(saga: Saga) -> Any:
        result = await confirm(saga)
        cancel = commands.CancelJob(commands.Actor("co_rt", "company"), saga.job_id, "no")
        await cancellation.cancel_job(cancel, deps.fresh())
        round_trips.sent.clear()  # what the request's Confirm step sends from here
        return result

    participants.payments.confirm = confirmed_while_cancelled  # type: ignore[method-assign]

    with pytest.raises(HirepayError):
        await pay_to_post.create_job_with_payment(_post("cancelled"), deps)

    assert round_trips.simple("BEGIN") >= 1  # the step was taken again under lock
    async with deps.uow as uow:
        saga = await uow.sagas.get_by_key("co_rt", "cancelled")
        assert saga is not None
        job = await uow.jobs.get(saga.job_id)
        trail = [t.to_status for t in await uow.jobs.transitions(saga.job_id)]
    assert job is not None and job.status is JobStatus.CANCELLED
    assert JobStatus.ACTIVE not in trail
    assert saga.state is SagaState.REFUNDED and saga.activated is False
    assert participants.payments.refunded[saga.id] == saga.amount_minor


async def test_jobs_by_ids_are_one_statement(sessions, round_trips):
    """The auditor's page of captured payments reads their jobs in one statement (issue 13)."""
    deps = _deps(sessions)
    answers = [
        await pay_to_post.create_job_with_payment(_post(f"many-{n}"), deps) for n in range(3)
    ]
    ids = [a.job.id for a in answers]
    async with deps.uow as uow:
        round_trips.sent.clear()
        found = await uow.jobs.get_many([*ids, "job_missing", ids[0]])
        assert round_trips.kinds()["statement"] == 1, round_trips.sent
    assert sorted(found) == sorted(ids)
    assert all(found[i].status is JobStatus.ACTIVE for i in ids)


async def test_a_step_on_rows_updated_meanwhile_to_the_same_values_is_taken_under_lock(
    sessions, round_trips
):
    """A step on the rows as the request stored them is guarded by their versions, which
    PostgreSQL moves on every UPDATE of a saga or job, whoever makes it (migration 0010): rows
    updated meanwhile, even to the values they held, fail the guard, and the step is taken on the
    rows read under lock (BEGIN, locked read, writes, COMMIT). The guard names the versions,
    not every column (issue 13: 59 parameters a step)."""
    participants = FakeParticipants()
    deps = Deps.build(lambda: SqlJobsUnitOfWork(sessions), make_config(), participants)
    confirm = participants.payments.confirm

    async def confirmed_while_touched(saga: Saga) -> Any:
        result = await confirm(saga)
        async with sessions() as s:  # someone else's update that changes no value
            await s.execute(
                text("UPDATE jobs SET title = title WHERE id = :id"), {"id": saga.job_id}
            )
            await s.commit()
        round_trips.sent.clear()  # what the request's Confirm step sends from here
        return result

    participants.payments.confirm = confirmed_while_touched  # type: ignore[method-assign]
    answer = await pay_to_post.create_job_with_payment(_post("touched"), deps)

    assert answer.job.status is JobStatus.ACTIVE
    assert round_trips.simple("BEGIN") == 1 and round_trips.simple("COMMIT") == 1
    guards = [s for s in round_trips.statements if s.startswith("WITH guard")]
    assert len(guards) == 1 and "IS NOT DISTINCT FROM" not in guards[0], guards
    async with sessions() as s:
        versions = await s.execute(
            text(
                "SELECT s.version, j.version FROM sagas s JOIN jobs j ON j.id = s.job_id "
                "WHERE s.id = :id"
            ),
            {"id": answer.saga_id},
        )
        # Saga: the Try's answer, the Confirm; job: the Try's payment id, the touch, the Confirm.
        assert tuple(versions.one()) == (2, 3)
