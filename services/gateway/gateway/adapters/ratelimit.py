"""Per-user rate limit of posting attempts (PAY-14), with IETF RateLimit headers.

`SharedPostingLimiter` is what the gateway uses: the token bucket lives in the jobs service's
database and CreateJobWithPayment spends one attempt from it before anything else (one call per
posting), so every gateway replica spends from the same bucket and a user gets the quota once, not
once per replica. `TokenBucketLimiter` is the same bucket in one process's memory (the test fakes
of jobs keep their buckets with it).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hirepay.jobs.v1 import jobs_service_pb2 as jobs_pb
from hirepay_platform.errors import RemoteError

if TYPE_CHECKING:
    from gateway.adapters.backends import JobsClient

WINDOW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one take: allowed or not, and what the headers must say."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    retry_after_seconds: int
    window_seconds: int
    policy: str

    def headers(self) -> dict[str, str]:
        """RateLimit-Policy / RateLimit (draft-ietf-httpapi-ratelimit-headers), Retry-After on 429."""
        out = {
            "RateLimit-Policy": f'"{self.policy}";q={self.limit};w={self.window_seconds}',
            "RateLimit": f'"{self.policy}";r={self.remaining};t={self.reset_seconds}',
        }
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after_seconds)
        return out

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """headers() as an answer's head carries them (names lowered, bytes), written at once."""
        policy = self.policy.encode("latin-1")
        out = [
            (b"ratelimit-policy", b'"%s";q=%d;w=%d' % (policy, self.limit, self.window_seconds)),
            (b"ratelimit", b'"%s";r=%d;t=%d' % (policy, self.remaining, self.reset_seconds)),
        ]
        if not self.allowed:
            out.append((b"retry-after", b"%d" % self.retry_after_seconds))
        return out


class TokenBucketLimiter:
    """`per_minute` tokens per key, refilled continuously; the bucket starts full (burst = quota)."""

    def __init__(
        self,
        per_minute: int,
        *,
        policy: str = "default",
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = per_minute
        self.rate = per_minute / 60.0
        self.policy = policy
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        # Attempts already charged: a retry with the same Idempotency-Key is the same attempt, so
        # replays and concurrent twins never spend a second token (and get the same answer).
        self._charged: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str, attempt: str | None = None) -> Decision:
        """Spend one token for `key` if there is one; a repeated `attempt` of `key` spends none."""
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.get(key, (float(self.capacity), now))
            tokens = min(float(self.capacity), tokens + (now - last) * self.rate)
            repeat = attempt is not None and (key, attempt) in self._charged
            allowed = repeat or tokens >= 1.0
            if allowed and not repeat:
                tokens -= 1.0
                if attempt is not None:
                    self._charged[(key, attempt)] = now
            self._buckets[key] = (tokens, now)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self.max_keys:  # bounded memory: forget the idlest
                self._buckets.popitem(last=False)
            while len(self._charged) > self.max_keys:
                self._charged.popitem(last=False)
        missing_for_one = max(0.0, 1.0 - tokens)
        return Decision(
            allowed=allowed,
            limit=self.capacity,
            remaining=int(tokens),
            reset_seconds=math.ceil((self.capacity - tokens) / self.rate),
            retry_after_seconds=max(1, math.ceil(missing_for_one / self.rate)),
            window_seconds=60,
            policy=self.policy,
        )


class PostingFailed(Exception):
    """CreateJobWithPayment failed: jobs' error, and its decision on the attempt (None when it
    decided none, e.g. the call never reached it)."""

    def __init__(self, error: RemoteError, decision: Decision | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.decision = decision


class SharedPostingLimiter:
    """`per_minute` posting attempts per user, the bucket kept by the jobs service for all replicas.

    The user is the signed actor of the call (the gateway's verified caller), never a field. The
    attempt is the request's Idempotency-Key: a retry of an attempt already charged spends none."""

    def __init__(self, jobs: JobsClient, per_minute: int, *, policy: str = "default") -> None:
        self._jobs = jobs
        self.capacity = per_minute
        self.policy = policy

    async def create_job_with_payment(
        self, request: jobs_pb.CreateJobWithPaymentRequest
    ) -> tuple[jobs_pb.CreateJobWithPaymentResponse, Decision]:
        """CreateJobWithPayment under the caller's limit: jobs spends the attempt first (a refused
        one changes nothing and fails RATE_LIMITED). Its errors come as PostingFailed, with the
        decision when jobs made one."""
        request.rate_limit.CopyFrom(
            jobs_pb.PostingRateLimit(limit=self.capacity, window_seconds=WINDOW_SECONDS)
        )
        try:
            response = await self._jobs.create_job_with_payment(request)
        except RemoteError as exc:
            raise PostingFailed(exc, self._from_metadata(exc.metadata)) from exc
        decided = response.rate_limit
        return response, self._decision(
            decided.allowed,
            decided.limit,
            decided.remaining,
            decided.reset_seconds,
            decided.retry_after_seconds,
        )

    def _from_metadata(self, metadata: dict[str, str]) -> Decision | None:
        """The decision an error's ErrorInfo metadata carries (keys removed: they are headers, not
        fields of the error), None when there is none."""
        values = {key: metadata.pop(f"{_METADATA_PREFIX}{key}", None) for key in _METADATA_KEYS}
        if any(value is None for value in values.values()):
            return None
        try:
            return self._decision(
                values["allowed"] == "true",
                int(values["limit"] or 0),
                int(values["remaining"] or 0),
                int(values["reset_seconds"] or 0),
                int(values["retry_after_seconds"] or 0),
            )
        except ValueError:
            return None

    def _decision(
        self, allowed: bool, limit: int, remaining: int, reset: int, retry_after: int
    ) -> Decision:
        return Decision(
            allowed=allowed,
            limit=limit,
            remaining=remaining,
            reset_seconds=reset,
            retry_after_seconds=retry_after,
            window_seconds=WINDOW_SECONDS,
            policy=self.policy,
        )


# The ErrorInfo metadata jobs adds to an error of a posting whose attempt it decided.
_METADATA_PREFIX = "rate_limit_"
_METADATA_KEYS = ("allowed", "limit", "remaining", "reset_seconds", "retry_after_seconds")
