"""The posting rate limit (PAY-14) as a token bucket: pure arithmetic over a stored bucket.

The bucket lives in the jobs database, so every gateway replica spends from the same one."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime


@dataclass(slots=True)
class PostingAttempt:
    """One posting attempt to spend on its user's bucket (`limit` per `window_seconds`; a charged
    attempt remembered until `forget_before`). `tokens` and `allowed` are what spending it did,
    recorded by the repository that spent it (None: not decided, e.g. a first step that found
    no bucket for the user yet)."""

    user_id: str
    attempt_id: str
    limit: int
    window_seconds: int
    now: datetime
    forget_before: datetime
    tokens: float | None = None
    allowed: bool | None = None

    def decision(self) -> RateDecision | None:
        """The decision once spent (None before)."""
        if self.tokens is None or self.allowed is None:
            return None
        return decide(
            self.tokens, self.allowed, limit=self.limit, window_seconds=self.window_seconds
        )


@dataclass(frozen=True, slots=True)
class RateDecision:
    """One attempt's outcome and what the caller's RateLimit headers must say."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    retry_after_seconds: int

    def as_metadata(self) -> dict[str, str]:
        """The decision as ErrorInfo metadata: an error of the request that spent the attempt
        still tells the caller what its RateLimit headers say (keys RATE_LIMIT_METADATA)."""
        return {
            "rate_limit_allowed": "true" if self.allowed else "false",
            "rate_limit_limit": str(self.limit),
            "rate_limit_remaining": str(self.remaining),
            "rate_limit_reset_seconds": str(self.reset_seconds),
            "rate_limit_retry_after_seconds": str(self.retry_after_seconds),
        }


def take_token(
    tokens: float,
    last: datetime,
    now: datetime,
    *,
    limit: int,
    window_seconds: int,
    repeat: bool,
) -> tuple[float, RateDecision]:
    """Refill the bucket (`limit` tokens per `window_seconds`, continuously, never above `limit`)
    and spend one token unless the attempt was charged before (`repeat`): (new tokens, decision)."""
    rate = limit / window_seconds
    elapsed = max(0.0, (now - last).total_seconds())
    tokens = min(float(limit), tokens + elapsed * rate)
    allowed = repeat or tokens >= 1.0
    if allowed and not repeat:
        tokens -= 1.0
    return tokens, decide(tokens, allowed, limit=limit, window_seconds=window_seconds)


def decide(tokens: float, allowed: bool, *, limit: int, window_seconds: int) -> RateDecision:
    """The decision of an attempt that left `tokens` in the bucket (the RateLimit headers)."""
    rate = limit / window_seconds
    missing_for_one = max(0.0, 1.0 - tokens)
    return RateDecision(
        allowed=allowed,
        limit=limit,
        remaining=int(tokens),
        reset_seconds=math.ceil((limit - tokens) / rate),
        retry_after_seconds=max(1, math.ceil(missing_for_one / rate)),
    )
