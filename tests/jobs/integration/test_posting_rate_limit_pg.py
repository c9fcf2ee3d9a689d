"""The posting rate limit (PAY-14) on real PostgreSQL: one statement per attempt decides exactly as
the token bucket's arithmetic does, one attempt at a time per user, a repeated attempt (even a
concurrent twin) spends nothing, and charged attempts are forgotten past the horizon; through
CreateJobWithPayment, the attempt is spent first (with a new posting's first step, in one
statement) and a refused posting leaves nothing behind."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from jobs.adapters.unit_of_work import SqlJobsUnitOfWork
from jobs.domain import commands
from jobs.domain.errors import PostingBlocked, PostingRateLimited
from jobs.domain.model import JobStatus
from jobs.domain.rate_limits import RateDecision, take_token
from jobs.service_layer.deps import Deps
from jobs.service_layer.handlers import pay_to_post
from jobs.service_layer.handlers.rate_limits import ATTEMPT_MEMORY, take_posting_attempt
from tests.support.jobs_fakes import FakeParticipants, make_config
from tests.support.jobs_world import FIELDS, declined_saga

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _deps(sessions, now: list[datetime]) -> Deps:
    return Deps.build(
        lambda: SqlJobsUnitOfWork(sessions),
        make_config(),
        FakeParticipants(),
        clock=lambda: now[0],
    )


async def _take(deps: Deps, user: str, attempt: str, limit: int = 3, window: int = 60):
    cmd = commands.TakePostingAttempt(commands.Actor(user, "company"), attempt, limit, window)
    return await take_posting_attempt(cmd, deps.fresh())  # its own unit of work


async def test_the_statement_decides_as_the_token_bucket_does(sessions):
    now = [T0]
    deps = _deps(sessions, now)
    tokens, last = 3.0, T0
    charged: set[str] = set()
    steps = [
        (0, "a1"),
        (0, "a2"),
        (0, "a1"),
        (1.5, "a3"),
        (0, "a4"),
        (7.25, "a4"),
        (0, ""),
        (40, ""),
    ]
    steps += [(0.001, "a5"), (3600, "a6"), (0, "a6"), (-5, "a7")]
    for dt, attempt in steps:
        now[0] = now[0] + timedelta(seconds=dt)
        repeat = attempt in charged
        tokens, expected = take_token(
            tokens, last, now[0], limit=3, window_seconds=60, repeat=repeat
        )
        last = now[0]
        if expected.allowed and not repeat and attempt:
            charged.add(attempt)
        assert await _take(deps, "acme", attempt) == expected, (dt, attempt)


async def test_concurrent_attempts_spend_the_bucket_exactly_once_each(sessions):
    now = [T0]
    deps = _deps(sessions, now)
    # Distinct attempts racing on one bucket: exactly `limit` pass.
    outcomes = await asyncio.gather(*(_take(deps, "busy", f"k{i}", limit=5) for i in range(20)))
    assert sum(d.allowed for d in outcomes) == 5
    # Twins of one attempt racing (a fresh bucket and a nearly empty one): one token at most.
    twins = await asyncio.gather(*(_take(deps, "twin", "same", limit=5) for _ in range(10)))
    assert all(d.allowed for d in twins)
    assert min(d.remaining for d in twins) == 4
    await _take(deps, "low", "x1", limit=2)  # one token left, then twins race for it
    twins = await asyncio.gather(*(_take(deps, "low", "x2", limit=2) for _ in range(10)))
    assert all(d.allowed for d in twins)
    assert (await _take(deps, "low", "x3", limit=2)).allowed is False


async def test_charged_attempts_are_forgotten_past_the_horizon(sessions):
    now = [T0]
    deps = _deps(sessions, now)
    assert (await _take(deps, "acme", "old")).allowed
    now[0] = T0 + ATTEMPT_MEMORY + timedelta(seconds=1)
    assert (await _take(deps, "acme", "new")).allowed
    async with sessions() as session:
        kept = (
            await session.execute(text("SELECT attempt_id FROM posting_rate_attempts"))
        ).scalars()
        assert sorted(kept) == ["new"]


def _posting(user: str, key: str, limit: int) -> commands.CreateJobWithPayment:
    return commands.CreateJobWithPayment(
        request_id=key,
        actor=commands.Actor(user, "company"),
        payment=commands.PaymentChoice(method="card", payment_method_token="pm_card_visa"),
        accept_terms=True,
        fingerprint=f"fp-{key}",
        fields=FIELDS,
        rate_limit=commands.PostingRateLimit(limit, 60),
    )


async def _rows(sessions, user: str) -> tuple[int, int]:
    """(sagas, jobs) of `user` in the database."""
    async with sessions() as session:
        sagas = await session.scalar(
            text("SELECT count(*) FROM sagas WHERE company_id = :u"), {"u": user}
        )
        jobs = await session.scalar(
            text("SELECT count(*) FROM jobs WHERE company_id = :u"), {"u": user}
        )
    return int(sagas or 0), int(jobs or 0)


async def test_a_refused_posting_moves_no_money_and_makes_no_job(sessions):
    now = [T0]
    participants = FakeParticipants()
    deps = Deps.build(
        lambda: SqlJobsUnitOfWork(sessions), make_config(), participants, clock=lambda: now[0]
    )
    first = await pay_to_post.create_job_with_payment(_posting("acme", "k1", 1), deps.fresh())
    assert first.job.status is JobStatus.ACTIVE
    assert first.rate_limit == RateDecision(True, 1, 0, 60, 60)
    calls = list(participants.payments.calls)
    with pytest.raises(PostingRateLimited) as refused:
        await pay_to_post.create_job_with_payment(_posting("acme", "k2", 1), deps.fresh())
    assert refused.value.metadata == RateDecision(False, 1, 0, 60, 60).as_metadata()
    assert participants.payments.calls == calls  # no Try, no Confirm: no money moved
    assert await _rows(sessions, "acme") == (1, 1)  # no saga, no job for the refused attempt
    # The first posting's retry is the same attempt: answered again, nothing spent.
    again = await pay_to_post.create_job_with_payment(_posting("acme", "k1", 1), deps.fresh())
    assert again.replayed and again.job.id == first.job.id


async def test_racing_postings_pass_exactly_the_limit_and_twins_spend_once(sessions):
    participants = FakeParticipants()
    deps = Deps.build(lambda: SqlJobsUnitOfWork(sessions), make_config(), participants)

    async def post(key: str) -> bool:
        try:
            await pay_to_post.create_job_with_payment(_posting("busy", key, 3), deps.fresh())
        except PostingRateLimited:
            return False
        return True

    # Twins of one key (one attempt: one token at most) race beside distinct keys. Which
    # attempts win the three tokens is the race's business; that exactly three attempts pass, and
    # that the twins share one fate (one attempt, one token), is not.
    outcomes = await asyncio.gather(*(post(k) for k in ["twin"] * 5 + [f"k{i}" for i in range(8)]))
    twins, distinct = outcomes[:5], outcomes[5:]
    assert len(set(twins)) == 1
    assert int(twins[0]) + sum(distinct) == 3
    # One saga and one job per posting that passed; the refused ones left nothing.
    assert await _rows(sessions, "busy") == (3, 3)
    assert len([c for c in participants.payments.calls if c[0] == "try"]) == 3


async def test_an_attempt_spent_with_the_first_step_counts_though_nothing_is_inserted(sessions):
    """A posting of new fields spends its attempt in its first step's statement (issue 13): a
    blocked company (PAY-14's abuse rule) has nothing inserted, yet its attempt is charged as an
    attempt spent alone would be, and the error carries the decision."""
    now = [T0]
    config = make_config(max_failed_payments=1, failed_payments_window_seconds=3600)
    deps = Deps.build(
        lambda: SqlJobsUnitOfWork(sessions), config, FakeParticipants(), clock=lambda: now[0]
    )
    await _take(deps, "blocked", "earlier")  # the bucket exists: the first step spends
    async with deps.uow as uow:  # one recent failed payment: the company is blocked
        await uow.sagas.insert(declined_saga("saga_declined", "blocked", "declined", T0))
        await uow.commit()

    with pytest.raises(PostingBlocked) as blocked:
        await pay_to_post.create_job_with_payment(_posting("blocked", "k1", 3), deps.fresh())

    assert blocked.value.metadata["rate_limit_remaining"] == "1"  # 3 - "earlier" - k1
    assert await _rows(sessions, "blocked") == (1, 0)  # only the declined saga, no job
    async with sessions() as session:
        charged = await session.execute(
            text("SELECT attempt_id FROM posting_rate_attempts WHERE user_id = 'blocked'")
        )
        assert sorted(charged.scalars()) == ["earlier", "k1"]
