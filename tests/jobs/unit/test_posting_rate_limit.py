"""The posting rate limit's token bucket (PAY-14): pure arithmetic, kept by jobs for all replicas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobs.domain import commands
from jobs.domain.errors import NotAllowed
from jobs.domain.rate_limits import take_token
from jobs.service_layer.handlers.rate_limits import take_posting_attempt
from tests.support.jobs_world import World

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_the_bucket_spends_down_refuses_then_refills() -> None:
    tokens, last = 3.0, T0
    seen = []
    for _ in range(4):
        tokens, decision = take_token(tokens, last, T0, limit=3, window_seconds=60, repeat=False)
        seen.append((decision.allowed, decision.remaining))
    assert seen == [(True, 2), (True, 1), (True, 0), (False, 0)]
    assert decision.retry_after_seconds == 20  # one token every 20 s
    later = T0 + timedelta(seconds=20)
    tokens, decision = take_token(tokens, T0, later, limit=3, window_seconds=60, repeat=False)
    assert decision.allowed and decision.remaining == 0


def test_a_repeated_attempt_spends_nothing_even_when_empty() -> None:
    tokens, decision = take_token(0.0, T0, T0, limit=3, window_seconds=60, repeat=True)
    assert decision.allowed and tokens == 0.0


def test_the_bucket_never_holds_more_than_the_limit() -> None:
    tokens, decision = take_token(
        3.0, T0, T0 + timedelta(days=1), limit=3, window_seconds=60, repeat=False
    )
    assert tokens == 2.0 and decision.reset_seconds == 20


async def test_the_handler_spends_per_user_remembers_attempts_and_refuses_anonymous() -> None:
    world = World()

    async def take(user: str, attempt: str) -> bool:
        cmd = commands.TakePostingAttempt(commands.Actor(user, "company"), attempt, 2, 60)
        return (await take_posting_attempt(cmd, world.deps)).allowed

    assert [await take("acme", a) for a in ("k1", "k2", "k3")] == [True, True, False]
    assert await take("acme", "k1")  # an attempt already charged spends nothing
    assert await take("other", "k1")  # buckets are per user
    with pytest.raises(NotAllowed):
        await take("", "k9")
