"""The posting rate limit (PAY-14) kept in the jobs database, so it holds across gateway replicas."""

from __future__ import annotations

from datetime import timedelta

from jobs.domain import commands
from jobs.domain.errors import NotAllowed, ValidationError
from jobs.domain.rate_limits import RateDecision, decide
from jobs.service_layer.deps import Deps

MAX_LIMIT = 100_000
MAX_WINDOW_SECONDS = 86_400
# How long a charged attempt is remembered (a retry within it spends nothing).
ATTEMPT_MEMORY = timedelta(days=1)


async def take_posting_attempt(cmd: commands.TakePostingAttempt, deps: Deps) -> RateDecision:
    """Spend one token of the actor's bucket, unless this attempt was charged before (a retry).

    The bucket's row is locked while an attempt is decided: replicas decide one at a time."""
    if not cmd.actor.user_id:
        raise NotAllowed("only a signed-in user spends posting attempts")
    if not 1 <= cmd.limit <= MAX_LIMIT:
        raise ValidationError("limit out of range", fields={"limit": f"must be 1..{MAX_LIMIT}"})
    if not 1 <= cmd.window_seconds <= MAX_WINDOW_SECONDS:
        raise ValidationError(
            "window out of range", fields={"window_seconds": f"must be 1..{MAX_WINDOW_SECONDS}"}
        )
    now = deps.clock()
    async with deps.uow as uow:
        tokens, allowed = await uow.rate_limits.take(
            cmd.actor.user_id,
            cmd.attempt_id,
            limit=cmd.limit,
            window_seconds=cmd.window_seconds,
            now=now,
            forget_before=now - ATTEMPT_MEMORY,
        )
        await uow.commit()
    return decide(tokens, allowed, limit=cmd.limit, window_seconds=cmd.window_seconds)
