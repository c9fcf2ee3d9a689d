"""What one posting costs the jobs database, pinned (issue 13): the round trips of a card posting's
happy path (rate limit, saga steps) counted on the wire's side of asyncpg, so a change that adds a
statement, a transaction or a re-prepared statement fails here. Also on real PostgreSQL: the
posting's first step (one statement) inserts nothing for a blocked company or a taken key."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from asyncpg import prepared_stmt
from sqlalchemy import text

from hirepay_platform.db import create_engine, make_session_factory
from jobs.adapters.unit_of_work import SqlJobsUnitOfWork
from jobs.domain import commands
from jobs.domain.errors import PostingBlocked
from jobs.domain.model import JobStatus
from jobs.domain.posting_saga import PaymentMethod, Saga, SagaError, SagaState
from jobs.service_layer.deps import Deps
from jobs.service_layer.handlers import pay_to_post
from tests.support.jobs_fakes import FakeParticipants, make_config
from tests.support.jobs_world import FIELDS


@pytest.fixture
async def sessions(make_service_database):
    url = await asyncio.to_thread(make_service_database, "jobs")
    # One connection: the measured posting runs on the connection the warm-up prepared.
    engine = create_engine(url, pool_size=1, max_overflow=0)
    yield make_session_factory(engine)
    await engine.dispose()


class RoundTrips:
    """Each round trip asyncpg makes: a simple query (BEGIN, COMMIT, ...), a prepare, or an
    execution of a prepared statement (one Bind/Execute/Sync)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def kinds(self) -> collections.Counter[str]:
        return collections.Counter(kind for kind, _ in self.sent)

    def simple(self, word: str) -> int:
        return sum(1 for kind, sql in self.sent if kind == "simple" and sql.startswith(word))


@pytest.fixture
def round_trips(monkeypatch) -> Iterator[RoundTrips]:
    trips = RoundTrips()
    execute = asyncpg.connection.Connection.execute
    prepare = asyncpg.connection.Connection.prepare
    fetch = prepared_stmt.PreparedStatement.fetch

    async def counted_execute(self: Any, query: str, *args: Any, **kw: Any) -> Any:
        trips.sent.append(("simple", query.strip().upper()))
        return await execute(self, query, *args, **kw)

    async def counted_prepare(self: Any, query: str, *args: Any, **kw: Any) -> Any:
        trips.sent.append(("prepare", query))
        return await prepare(self, query, *args, **kw)

    async def counted_fetch(self: Any, *args: Any, **kw: Any) -> Any:
        trips.sent.append(("statement", self.get_query()))
        return await fetch(self, *args, **kw)

    monkeypatch.setattr(asyncpg.connection.Connection, "execute", counted_execute)
    monkeypatch.setattr(asyncpg.connection.Connection, "prepare", counted_prepare)
    monkeypatch.setattr(prepared_stmt.PreparedStatement, "fetch", counted_fetch)
    yield trips


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


async def test_a_card_postings_happy_path_costs_six_round_trips(sessions, round_trips):
    """Rate limit: one statement alone. The saga's first step (saga, job, transitions, log line,
    abuse rule): one statement alone. The Try's answer and the Confirm (job live, answer stored):
    each BEGIN, the saga and job locked and read, the batch of writes, COMMIT. Every step is
    durable before the next participant call; nothing is prepared again once warm."""
    deps = _deps(sessions)
    for i in range(2):  # warm: the bucket exists, every statement is prepared on the connection
        await pay_to_post.create_job_with_payment(_post(f"warm-{i}"), deps)
    round_trips.sent.clear()

    answer = await pay_to_post.create_job_with_payment(_post("measured"), deps)

    assert answer.job.status is JobStatus.ACTIVE and not answer.replayed
    assert round_trips.kinds() == {"statement": 6, "simple": 4}, round_trips.sent
    assert (round_trips.simple("BEGIN"), round_trips.simple("COMMIT")) == (2, 2)


async def test_the_first_step_inserts_nothing_for_a_blocked_company(sessions):
    """PAY-14's abuse rule inside the first step's statement: a company with too many recent
    failed payments is refused and nothing is inserted; its key, once taken, still replays."""
    deps = _deps(sessions, max_failed_payments=2, failed_payments_window_seconds=3600)
    first = await pay_to_post.create_job_with_payment(_post("before", "co_block"), deps)
    now = datetime.now(UTC)
    async with deps.uow as uow:  # two recent failed payments of the company
        for n in range(2):
            await uow.sagas.insert(
                Saga(
                    id=f"saga_failed_{n}",
                    company_id="co_block",
                    request_id=f"failed-{n}",
                    fingerprint="fp",
                    actor="co_block",
                    state=SagaState.FAILED,
                    method=PaymentMethod.CARD,
                    created_at=now,
                    updated_at=now,
                    deadline_at=now + timedelta(minutes=15),
                    failure=SagaError("FAILED_PRECONDITION", "PAYMENT_DECLINED", "declined"),
                )
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
