"""In-memory fakes of the jobs unit of work and of the saga's participants (for unit tests)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hirepay_platform.errors import ErrorKind, HirepayError, Unavailable
from jobs.domain.applications import Application, ViewState
from jobs.domain.errors import InsufficientCredits
from jobs.domain.escrow import MoneyStep, StepState
from jobs.domain.events import MarketplaceEvent
from jobs.domain.model import Job, JobStatus, Transition
from jobs.domain.posting_saga import (
    FINAL_STATES,
    PaymentMethod,
    Saga,
    SagaState,
    TryResult,
    TryState,
)
from jobs.domain.pricing import PriceList, RefundPolicy
from jobs.domain.rate_limits import PostingAttempt, take_token
from jobs.service_layer.config import JobsConfig

START = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@dataclass
class Store:
    """The fake database: committed state only."""

    jobs: dict[str, Job] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)
    sagas: dict[str, Saga] = field(default_factory=dict)
    log: list[tuple[str, str, str]] = field(default_factory=list)
    cursors: dict[str, int] = field(default_factory=dict)
    applications: dict[str, Application] = field(default_factory=dict)
    views: dict[tuple[str, str], ViewState] = field(default_factory=dict)
    # The posting rate limit: user -> (tokens, updated_at), and (user, attempt) -> charged_at.
    buckets: dict[str, tuple[float, datetime]] = field(default_factory=dict)
    charges: dict[tuple[str, str], datetime] = field(default_factory=dict)
    # The marketplace events outbox, by event id (insertion order kept).
    events: dict[str, MarketplaceEvent] = field(default_factory=dict)
    # Engagements' money steps, by (engagement, kind) (only the auditor's read is faked).
    steps: dict[tuple[str, str], MoneyStep] = field(default_factory=dict)


class FakeJobs:
    def __init__(self, tx: Store) -> None:
        self.tx = tx

    def _append(self, job: Job) -> None:
        self.tx.transitions.extend(job.drain_transitions())

    async def add(self, job: Job) -> None:
        assert job.id not in self.tx.jobs
        self._append(job)
        self.tx.jobs[job.id] = copy.deepcopy(job)

    async def add_if_absent(self, job: Job) -> bool:
        if await self.get_by_create_request(job.company_id, job.create_request_id):
            return False
        await self.add(job)
        return True

    async def get_by_create_request(self, company_id: str, request_id: str) -> Job | None:
        for j in self.tx.jobs.values():
            if (j.company_id, j.create_request_id) == (company_id, request_id):
                return copy.deepcopy(j)
        return None

    async def get(self, job_id: str, *, for_update: bool = False) -> Job | None:
        job = self.tx.jobs.get(job_id)
        return copy.deepcopy(job) if job else None

    async def get_many(self, job_ids: Sequence[str]) -> dict[str, Job]:
        return {i: copy.deepcopy(self.tx.jobs[i]) for i in job_ids if i in self.tx.jobs}

    async def save(self, job: Job) -> None:
        assert job.id in self.tx.jobs
        self._append(job)
        self.tx.jobs[job.id] = copy.deepcopy(job)

    async def list_active(self, category, after, limit):
        jobs = [j for j in self.tx.jobs.values() if j.status is JobStatus.ACTIVE]
        if category:
            jobs = [j for j in jobs if j.fields.category == category]
        jobs.sort(key=lambda j: (j.posted_at, j.id), reverse=True)
        if after:
            jobs = [j for j in jobs if (j.posted_at, j.id) < after]
        return [copy.deepcopy(j) for j in jobs[:limit]]

    async def list_by_company(self, company_id, after, limit):
        jobs = [j for j in self.tx.jobs.values() if j.company_id == company_id]
        jobs.sort(key=lambda j: (j.created_at, j.id), reverse=True)
        if after:
            jobs = [j for j in jobs if (j.created_at, j.id) < after]
        return [copy.deepcopy(j) for j in jobs[:limit]]

    async def transitions(self, job_id: str) -> list[Transition]:
        return [t for t in self.tx.transitions if t.job_id == job_id]

    async def lock_expired(self, now, limit):
        jobs = [
            j
            for j in self.tx.jobs.values()
            if j.status is JobStatus.ACTIVE and j.expires_at and j.expires_at <= now
        ]
        return [copy.deepcopy(j) for j in jobs[:limit]]


class FakeSagas:
    def __init__(self, tx: Store, publish: Callable[[], None] = lambda: None) -> None:
        self.tx = tx
        # Publishes the transaction's state (a statement that commits by itself).
        self.publish = publish

    async def insert(self, saga: Saga) -> bool:
        for s in self.tx.sagas.values():
            if (s.company_id, s.request_id) == (saga.company_id, saga.request_id):
                return False
        self.tx.sagas[saga.id] = copy.deepcopy(saga)
        return True

    async def get(self, saga_id: str, *, for_update: bool = False) -> Saga | None:
        saga = self.tx.sagas.get(saga_id)
        return copy.deepcopy(saga) if saga else None

    def stored(self, saga_id: str) -> object | None:
        return None  # the fake reads every step's rows (it keeps no stored rows to assume)

    async def lock_with_job(
        self, saga_id: str, *, lock_job: bool = True, assumed: object | None = None
    ) -> tuple[Saga | None, Job | None]:
        saga = self.tx.sagas.get(saga_id)
        job = self.tx.jobs.get(saga.job_id) if saga and saga.job_id else None
        return copy.deepcopy(saga), copy.deepcopy(job)

    async def get_many(self, saga_ids: Sequence[str]) -> dict[str, Saga]:
        return {i: copy.deepcopy(self.tx.sagas[i]) for i in saga_ids if i in self.tx.sagas}

    async def get_by_key(self, company_id: str, request_id: str) -> Saga | None:
        for s in self.tx.sagas.values():
            if (s.company_id, s.request_id) == (company_id, request_id):
                return copy.deepcopy(s)
        return None

    async def save(self, saga: Saga) -> None:
        self.tx.sagas[saga.id] = copy.deepcopy(saga)

    async def log(self, saga_id: str, step: str, detail: str, at: datetime) -> None:
        self.tx.log.append((saga_id, step, detail))

    async def claim_due(self, now, owner, lease_until, limit):
        out = []
        for s in self.tx.sagas.values():
            if s.state in FINAL_STATES:
                continue
            if s.lease_until is not None and s.lease_until >= now:
                continue
            if s.next_attempt_at is not None and s.next_attempt_at > now:
                continue
            s.lease_owner, s.lease_until = owner, lease_until
            out.append(copy.deepcopy(s))
        return out[:limit]

    async def insert_posting(
        self,
        saga: Saga,
        job: Job,
        detail: str,
        *,
        failures_since: datetime | None = None,
        reasons: frozenset[str] = frozenset(),
        max_failures: int = 0,
        attempt: PostingAttempt | None = None,
    ) -> tuple[bool, int]:
        """The saga, its job and first log line, committed by themselves (see the real one)."""
        if attempt is not None:
            tokens, last = self.tx.buckets.get(attempt.user_id, (0.0, attempt.now))
            if attempt.user_id not in self.tx.buckets:
                return False, 0  # no bucket yet: nothing spent, nothing inserted
            had_token = take_token(
                tokens,
                last,
                attempt.now,
                limit=attempt.limit,
                window_seconds=attempt.window_seconds,
                repeat=False,
            )[1].allowed
            attempt.tokens, attempt.allowed = await FakePostingRates(self.tx).take(
                attempt.user_id,
                attempt.attempt_id,
                limit=attempt.limit,
                window_seconds=attempt.window_seconds,
                now=attempt.now,
                forget_before=attempt.forget_before,
            )
            if not had_token:
                return False, 0
        failures = 0
        if failures_since is not None:
            failures = self._failures(saga.company_id, failures_since, reasons)
            if failures >= max_failures:
                return False, failures
        if not await self.insert(saga):
            return False, failures
        await FakeJobs(self.tx).add(job)
        self.tx.log.append((saga.id, "pending_payment", detail))
        self.publish()
        return True, failures

    def _failures(self, company_id: str, since: datetime, reasons: frozenset[str]) -> int:
        return sum(
            1
            for s in self.tx.sagas.values()
            if s.company_id == company_id
            and s.created_at >= since
            and s.failure is not None
            and s.failure.reason in reasons
        )

    async def insert_counting_failures(self, saga, since, reasons):
        failures = sum(
            1
            for s in self.tx.sagas.values()
            if s.company_id == saga.company_id
            and s.created_at >= since
            and s.failure is not None
            and s.failure.reason in reasons
        )
        return failures if await self.insert(saga) else None

    async def count_stuck(self, now):
        return sum(
            1
            for s in self.tx.sagas.values()
            if s.state not in FINAL_STATES
            and s.state is not SagaState.AWAITING_SETTLEMENT
            and s.deadline_at < now
        )


class FakeSettlements:
    def __init__(self, tx: Store) -> None:
        self.tx = tx

    async def cursor(self, consumer: str) -> int:
        return self.tx.cursors.get(consumer, 0)

    async def advance(self, consumer: str, cursor: int) -> None:
        self.tx.cursors[consumer] = max(cursor, self.tx.cursors.get(consumer, 0))


class FakeApplications:
    def __init__(self, tx: Store) -> None:
        self.tx = tx

    async def add_if_absent(self, application: Application) -> bool:
        key = (application.job_id, application.applicant_id)
        if any((a.job_id, a.applicant_id) == key for a in self.tx.applications.values()):
            return False
        self.tx.applications[application.id] = copy.deepcopy(application)
        return True

    async def get(self, application_id: str, *, for_update: bool = False) -> Application | None:
        return copy.deepcopy(self.tx.applications.get(application_id))

    async def get_for(self, job_id: str, applicant_id: str) -> Application | None:
        for a in self.tx.applications.values():
            if (a.job_id, a.applicant_id) == (job_id, applicant_id):
                return copy.deepcopy(a)
        return None

    async def save(self, application: Application) -> None:
        self.tx.applications[application.id] = copy.deepcopy(application)

    def _newest(self, found: list[Application], limit: int) -> list[Application]:
        return copy.deepcopy(
            sorted(found, key=lambda a: (a.created_at, a.id), reverse=True)[:limit]
        )

    async def list_by_applicant(self, applicant_id: str, limit: int) -> list[Application]:
        found = [a for a in self.tx.applications.values() if a.applicant_id == applicant_id]
        return self._newest(found, limit)

    async def list_by_job(self, job_id: str, limit: int) -> list[Application]:
        return self._newest([a for a in self.tx.applications.values() if a.job_id == job_id], limit)


class FakeCandidateViews:
    def __init__(self, tx: Store) -> None:
        self.tx = tx

    async def claim(
        self, company_id: str, applicant_id: str, transfer_id: str, now: datetime
    ) -> ViewState:
        return self.tx.views.setdefault((company_id, applicant_id), ViewState.CHARGING)

    async def state(self, company_id: str, applicant_id: str) -> ViewState | None:
        return self.tx.views.get((company_id, applicant_id))

    async def mark_charged(
        self, company_id: str, applicant_id: str, transfer_id: str, now: datetime
    ) -> bool:
        before = self.tx.views.get((company_id, applicant_id))
        self.tx.views[(company_id, applicant_id)] = ViewState.CHARGED
        return before is not ViewState.CHARGED

    async def release(self, company_id: str, applicant_id: str) -> None:
        if self.tx.views.get((company_id, applicant_id)) is ViewState.CHARGING:
            del self.tx.views[(company_id, applicant_id)]

    async def viewed(self, company_id: str, applicant_ids: list[str]) -> set[str]:
        return {a for a in applicant_ids if self.tx.views.get((company_id, a)) is ViewState.CHARGED}


class FakeCandidateCredits:
    """The wallet's candidate credits: one debit per transfer id; `fail_after_debit` loses the
    answer after the debit was made (the caller sees an error, the credit is taken)."""

    def __init__(self, balances: dict[str, int] | None = None) -> None:
        self.balances = dict(balances or {})
        self.transfers: set[str] = set()
        self.fail_after_debit = False

    async def debit_view(self, company_id: str, applicant_id: str, transfer_id: str) -> None:
        if transfer_id not in self.transfers:
            if self.balances.get(company_id, 0) < 1:
                raise InsufficientCredits("no candidate credits left")
            self.balances[company_id] -= 1
            self.transfers.add(transfer_id)
        if self.fail_after_debit:
            self.fail_after_debit = False
            raise Unavailable("the wallet's answer was lost")


class FakePostingRates:
    def __init__(self, tx: Store) -> None:
        self.tx = tx

    async def take(
        self,
        user_id: str,
        attempt_id: str,
        *,
        limit: int,
        window_seconds: int,
        now: datetime,
        forget_before: datetime,
    ) -> tuple[float, bool]:
        tokens, last = self.tx.buckets.setdefault(user_id, (float(limit), now))
        repeat = bool(attempt_id) and (user_id, attempt_id) in self.tx.charges
        tokens, decision = take_token(
            tokens, last, now, limit=limit, window_seconds=window_seconds, repeat=repeat
        )
        self.tx.buckets[user_id] = (tokens, now)
        if decision.allowed and not repeat and attempt_id:
            self.tx.charges.setdefault((user_id, attempt_id), now)
            for key, at in list(self.tx.charges.items()):
                if key[0] == user_id and at < forget_before:
                    del self.tx.charges[key]
        return tokens, decision.allowed


class FakeOutbox:
    def __init__(self, tx: Store) -> None:
        self.tx = tx

    async def add(self, event: MarketplaceEvent) -> bool:
        if event.event_id in self.tx.events:
            return False
        self.tx.events[event.event_id] = replace(event, cursor=len(self.tx.events) + 1)
        return True

    async def for_subject(self, subject_id: str) -> list[MarketplaceEvent]:
        return [e for e in self.tx.events.values() if e.subject_id == subject_id]


class FakeMoneySteps:
    def __init__(self, tx: Store) -> None:
        self.tx = tx

    async def pending_since(self, before: datetime, limit: int) -> list[MoneyStep]:
        pending = [
            s
            for s in self.tx.steps.values()
            if s.state is StepState.PENDING and s.created_at < before
        ]
        return sorted(pending, key=lambda s: s.created_at)[:limit]

    async def refund_refused(self, limit: int) -> list[MoneyStep]:
        return []


class FakeEscrowRefunds:
    """No refunds of offer money made at the provider (the posting fakes have no marketplace)."""

    def __init__(self, tx: Store) -> None:
        self.tx = tx

    async def unsettled(self, limit: int) -> list[object]:
        return []


class FakeUnitOfWork:
    """Each `async with` works on a copy of the store; commit publishes it, exit drops it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.commits = 0

    async def __aenter__(self) -> FakeUnitOfWork:
        self._tx = copy.deepcopy(self.store)
        self.jobs = FakeJobs(self._tx)
        self.sagas = FakeSagas(self._tx, self._publish)
        self.settlements = FakeSettlements(self._tx)
        self.applications = FakeApplications(self._tx)
        self.candidate_views = FakeCandidateViews(self._tx)
        self.rate_limits = FakePostingRates(self._tx)
        self.outbox = FakeOutbox(self._tx)
        self.money_steps = FakeMoneySteps(self._tx)
        self.escrow_refunds = FakeEscrowRefunds(self._tx)
        self._committed = False
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._tx = None  # type: ignore[assignment]

    async def commit(self) -> None:
        self._publish()
        self.commits += 1
        self._committed = True

    def _publish(self) -> None:
        for name in (
            "jobs",
            "transitions",
            "sagas",
            "log",
            "cursors",
            "applications",
            "views",
            "buckets",
            "charges",
            "events",
            "steps",
        ):
            setattr(self.store, name, copy.deepcopy(getattr(self._tx, name)))


# The names payments gives these states (Payment.State), as the real adapter reports them: the
# saga orders its recorded provider state by them (PROVIDER_STATE_ORDER).
PROVIDER_NAMES: dict[TryState, str] = {
    TryState.ACTION_REQUIRED: "REQUIRES_ACTION",
    TryState.PROCESSING: "PROCESSING",
    TryState.RESERVED: "AUTHORIZED",
    TryState.CAPTURED: "CAPTURED",
    TryState.CANCELLED: "VOIDED",
    TryState.FAILED: "FAILED",
    TryState.REFUNDED: "REFUNDED",
    TryState.UNKNOWN: "UNKNOWN",
}


class FakeParticipant:
    """A participant whose answers tests script; it keeps the branch's state like the real ones."""

    def __init__(self, name: str = "payments") -> None:
        self.name = name
        self.calls: list[tuple[str, str]] = []
        self.try_outcome: TryResult | HirepayError = TryResult(
            TryState.RESERVED, "pay_1", "AUTHORIZED"
        )
        self.confirm_errors: list[HirepayError] = []
        # The branch's state after a scripted Confirm error (e.g. CANCELLED: the auth expired).
        self.state_after_confirm_error: TryState | None = None
        self.cancel_errors: list[HirepayError] = []
        self.refund_errors: list[HirepayError] = []
        self.state: dict[str, TryState] = {}
        self.refunded: dict[str, int] = {}
        self.on_try: Any = None

    async def try_(self, saga: Saga) -> TryResult:
        self.calls.append(("try", saga.id))
        if self.on_try:
            self.on_try(saga)
        if self.state.get(saga.id) is TryState.CANCELLED:
            raise HirepayError("cancelled before try", reason="PAYMENT_VOIDED")
        outcome = self.try_outcome
        if isinstance(outcome, HirepayError):
            if outcome.reason == "PAYMENT_TIMEOUT":
                self.state[saga.id] = TryState.UNKNOWN
            raise outcome
        self.state.setdefault(saga.id, outcome.state)
        return replace(outcome, state=self.state[saga.id])

    async def confirm(self, saga: Saga) -> TryResult:
        self.calls.append(("confirm", saga.id))
        if self.confirm_errors:
            if self.state_after_confirm_error is not None:
                self.state[saga.id] = self.state_after_confirm_error
            raise self.confirm_errors.pop(0)
        assert self.state.get(saga.id) in (TryState.RESERVED, TryState.CAPTURED), self.state
        self.state[saga.id] = TryState.CAPTURED
        return TryResult(TryState.CAPTURED, "pay_1", "CAPTURED")

    async def cancel(self, saga: Saga, reason: str) -> TryResult:
        self.calls.append(("cancel", saga.id))
        if self.cancel_errors:
            raise self.cancel_errors.pop(0)
        before = self.state.get(saga.id)
        if before is TryState.CAPTURED:
            raise HirepayError("captured", reason="PAYMENT_NOT_VOIDABLE", kind=_FP)
        self.state[saga.id] = TryState.CANCELLED
        if before is None:
            return TryResult(TryState.ABSENT)
        return TryResult(TryState.CANCELLED, "pay_1", "VOIDED")

    async def refund(self, saga: Saga, amount_minor: int, reason: str) -> None:
        self.calls.append(("refund", saga.id))
        if self.refund_errors:
            raise self.refund_errors.pop(0)
        if (
            self.refunded.get(saga.id) == amount_minor
            and self.state.get(saga.id) is TryState.REFUNDED
        ):
            return  # a repeat of the saga's one refund request answers it again (idempotent)
        assert self.state.get(saga.id) is TryState.CAPTURED
        self.refunded[saga.id] = amount_minor
        self.state[saga.id] = TryState.REFUNDED

    async def inspect(self, saga: Saga) -> TryResult:
        self.calls.append(("inspect", saga.id))
        state = self.state.get(saga.id)
        if state is None:
            return TryResult(TryState.ABSENT)
        return TryResult(state, "pay_1", PROVIDER_NAMES[state])

    async def inspect_many(self, sagas: Sequence[Saga]) -> dict[str, TryResult]:
        self.calls.append(("inspect_many", ",".join(s.id for s in sagas)))
        return {s.id: await self.inspect(s) for s in sagas}

    def held(self, saga_id: str) -> bool:
        return self.state.get(saga_id) in (TryState.RESERVED, TryState.UNKNOWN)

    def taken(self, saga_id: str) -> bool:
        return self.state.get(saga_id) is TryState.CAPTURED


_FP = ErrorKind.FAILED_PRECONDITION


class FakeParticipants:
    def __init__(self) -> None:
        self.payments = FakeParticipant("payments")
        self.credits = FakeParticipant("wallet")

    def for_method(self, method: PaymentMethod) -> FakeParticipant:
        return self.credits if method is PaymentMethod.CREDITS else self.payments


def make_config(**overrides: Any) -> JobsConfig:
    values: dict[str, Any] = {
        "price_list": PriceList(
            fees={"default": {"USD": 9900}, "engineering": {"USD": 14900, "EUR": 13900}},
            categories=frozenset({"engineering", "design", "sales"}),
        ),
        "terms_version": "2026-11",
        "posting_days": 30,
        "refund_policy": RefundPolicy(full_refund_within_hours=24),
        "instance_id": "test",
        "idempotency_wait_seconds": 0.5,
        "idempotency_poll_seconds": 0.01,
    }
    values.update(overrides)
    return JobsConfig(**values)
