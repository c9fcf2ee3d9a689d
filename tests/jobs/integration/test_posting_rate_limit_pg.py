"""The posting rate limit (PAY-14) on real PostgreSQL: one statement per attempt decides exactly as
the token bucket's arithmetic does, one attempt at a time per user, a repeated attempt (even a
concurrent twin) spends nothing, and charged attempts are forgotten past the horizon."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from hirepay_platform.db import create_engine, make_session_factory
from jobs.adapters.unit_of_work import SqlJobsUnitOfWork
from jobs.domain import commands
from jobs.domain.rate_limits import take_token
from jobs.service_layer.deps import Deps
from jobs.service_layer.handlers.rate_limits import ATTEMPT_MEMORY, take_posting_attempt
from tests.support.jobs_fakes import FakeParticipants, make_config

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
async def sessions(make_service_database):
    url = await asyncio.to_thread(make_service_database, "jobs")
    engine = create_engine(url, pool_size=30, max_overflow=10)
    yield make_session_factory(engine)
    await engine.dispose()


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
