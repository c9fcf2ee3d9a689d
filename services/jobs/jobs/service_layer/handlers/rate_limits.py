"""The posting rate limit (PAY-14) kept in the jobs database, so it holds across gateway replicas."""

from __future__ import annotations

from datetime import timedelta

from jobs.domain import commands
from jobs.domain.errors import NotAllowed, ValidationError
from jobs.domain.rate_limits import PostingAttempt, RateDecision
from jobs.service_layer.deps import Deps

MAX_LIMIT = 100_000
MAX_WINDOW_SECONDS = 86_400
# How long a charged attempt is remembered (a retry within it spends nothing).
ATTEMPT_MEMORY = timedelta(days=1)


def posting_attempt(cmd: commands.TakePostingAttempt, deps: Deps) -> PostingAttempt:
    """The attempt `cmd` asks to spend, checked (nothing is spent yet)."""
    if not cmd.actor.user_id:
        raise NotAllowed("only a signed-in user spends posting attempts")
    if not 1 <= cmd.limit <= MAX_LIMIT:
        raise ValidationError("limit out of range", fields={"limit": f"must be 1..{MAX_LIMIT}"})
    if not 1 <= cmd.window_seconds <= MAX_WINDOW_SECONDS:
        raise ValidationError(
            "window out of range", fields={"window_seconds": f"must be 1..{MAX_WINDOW_SECONDS}"}
        )
    now = deps.clock()
    return PostingAttempt(
        cmd.actor.user_id,
        cmd.attempt_id,
        cmd.limit,
        cmd.window_seconds,
        now=now,
        forget_before=now - ATTEMPT_MEMORY,
    )


async def spend_posting_attempt(attempt: PostingAttempt, deps: Deps) -> RateDecision:
    """Spend one token of the attempt's bucket (created full on a user's first attempt), unless
    the attempt was charged before (a retry), in a statement that commits by itself.

    The bucket's row is locked while an attempt is decided: replicas decide one at a time."""
    async with deps.uow as uow:
        attempt.tokens, attempt.allowed = await uow.rate_limits.take(
            attempt.user_id,
            attempt.attempt_id,
            limit=attempt.limit,
            window_seconds=attempt.window_seconds,
            now=attempt.now,
            forget_before=attempt.forget_before,
        )
        await uow.commit()
    decision = attempt.decision()
    assert decision is not None
    return decision


async def take_posting_attempt(cmd: commands.TakePostingAttempt, deps: Deps) -> RateDecision:
    """Spend one token of the actor's bucket, unless this attempt was charged before (a retry)."""
    return await spend_posting_attempt(posting_attempt(cmd, deps), deps)
