"""Faults injected into the jobs service from tests, by wrapping its ports (production has no hooks).

- `CrashingParticipants` / `FaultyUnitOfWork(crash_after=...)`: the process "dies" right after a saga
  step, in the saga's order: `pending` (the request's first transaction committed), `try` (the Try
  answered or failed), `confirming` (the activation checks passed, the move to CONFIRMING
  committed), `confirm` (the Confirm answered: money taken, job not live yet) or `activate` (the
  activation committed with the saga's completion); for offers, `offer_capture` (an accepted
  offer's money captured, nothing recorded yet) and `offer_book` (fee and escrow booked on the
  ledger, the job not assigned yet).
- `FaultyUnitOfWork(refuse_activation_marker=...)`: jobs whose title contains the marker cannot be
  activated, as if they had changed under the saga (PAY-7: the money goes back).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from jobs.domain.marketplace import FundingSplit, Offer
from jobs.domain.model import Job, JobStatus
from jobs.domain.posting_saga import PaymentMethod, Saga, SagaState, TryResult
from jobs.service_layer.ports import (
    JobsUnitOfWork,
    OfferFunds,
    OfferFundsByMethod,
    Participant,
    Participants,
)

CRASH_STEPS = (
    "pending",
    "try",
    "confirming",
    "confirm",
    "activate",
    "offer_capture",
    "offer_book",
)


class _RefusesActivation(Job):
    """A job that cannot go live (the injected activation failure)."""

    __slots__ = ()

    def activation_problem(self, saga_id: str) -> str:
        return "activation failed (injected fault)"


def refusing_activation(job: Job) -> Job:
    """The same job, refusing activation."""
    return _RefusesActivation(**{f.name: getattr(job, f.name) for f in dataclasses.fields(job)})


class CrashingParticipant:
    """A participant that crashes the process right after its Try (answered or failed) or after a
    successful Confirm, when that is the chosen step."""

    def __init__(self, inner: Participant, crash_after: str, crash: Callable[[], Any]) -> None:
        self.inner = inner
        self.crash_after = crash_after
        self.crash = crash

    async def try_(self, saga: Saga) -> TryResult:
        try:
            return await self.inner.try_(saga)
        finally:
            if self.crash_after == "try":
                self.crash()

    async def confirm(self, saga: Saga) -> TryResult:
        result = await self.inner.confirm(saga)
        if self.crash_after == "confirm":
            self.crash()
        return result

    async def cancel(self, saga: Saga, reason: str) -> TryResult:
        return await self.inner.cancel(saga, reason)

    async def refund(self, saga: Saga, amount_minor: int, reason: str) -> None:
        await self.inner.refund(saga, amount_minor, reason)

    async def inspect(self, saga: Saga) -> TryResult:
        return await self.inner.inspect(saga)

    async def inspect_many(self, sagas: Sequence[Saga]) -> dict[str, TryResult]:
        return await self.inner.inspect_many(sagas)


class CrashingParticipants:
    """Every participant of `inner`, crashing after the chosen step."""

    def __init__(self, inner: Participants, crash_after: str, crash: Callable[[], Any]) -> None:
        self.inner = inner
        self.crash_after = crash_after
        self.crash = crash

    def for_method(self, method: PaymentMethod) -> Participant:
        return CrashingParticipant(self.inner.for_method(method), self.crash_after, self.crash)


class CrashingOfferFunds:
    """An offer's funds that crash the process right after the capture or the booking."""

    def __init__(self, inner: OfferFunds, crash_after: str, crash: Callable[[], Any]) -> None:
        self.inner = inner
        self.crash_after = crash_after
        self.crash = crash

    async def reserve(self, saga: Saga, offer: Offer, hold_seconds: int) -> TryResult:
        return await self.inner.reserve(saga, offer, hold_seconds)

    async def capture(
        self, saga: Saga, split: FundingSplit, escrow_account_id: str, fee_bps: int
    ) -> TryResult:
        result = await self.inner.capture(saga, split, escrow_account_id, fee_bps)
        if self.crash_after == "offer_capture":
            self.crash()
        return result

    async def book(self, saga: Saga, split: FundingSplit, escrow_account_id: str) -> None:
        await self.inner.book(saga, split, escrow_account_id)
        if self.crash_after == "offer_book":
            self.crash()

    async def release(self, saga: Saga, reason: str) -> TryResult:
        return await self.inner.release(saga, reason)

    async def inspect(self, saga: Saga) -> TryResult:
        return await self.inner.inspect(saga)

    async def escrow_account(self, engagement_id: str, unit: str) -> str:
        return await self.inner.escrow_account(engagement_id, unit)


class CrashingOfferFundsByMethod:
    def __init__(
        self, inner: OfferFundsByMethod, crash_after: str, crash: Callable[[], Any]
    ) -> None:
        self.inner = inner
        self.crash_after = crash_after
        self.crash = crash

    def for_method(self, method: PaymentMethod) -> OfferFunds:
        return CrashingOfferFunds(self.inner.for_method(method), self.crash_after, self.crash)


class _WatchedJobs:
    def __init__(self, inner: Any, uow: FaultyUnitOfWork) -> None:
        self._inner = inner
        self._uow = uow

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def get(self, job_id: str, *, for_update: bool = False) -> Job | None:
        return self.watch(await self._inner.get(job_id, for_update=for_update))

    def watch(self, job: Job | None) -> Job | None:
        marker = self._uow.refuse_activation_marker
        if job is not None and marker and marker in job.fields.title:
            return refusing_activation(job)
        return job

    async def save(self, job: Job) -> None:
        if self._uow.crash_after == "activate" and any(
            t.to_status is JobStatus.ACTIVE for t in job.pending
        ):
            self._uow.crash_on_commit = True
        await self._inner.save(job)


class _WatchedSagas:
    def __init__(self, inner: Any, uow: FaultyUnitOfWork) -> None:
        self._inner = inner
        self._uow = uow

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def insert(self, saga: Saga) -> bool:
        inserted = await self._inner.insert(saga)
        if inserted and self._uow.crash_after == "pending":
            self._uow.crash_on_commit = True
        return bool(inserted)

    async def insert_counting_failures(
        self, saga: Saga, since: datetime, reasons: frozenset[str]
    ) -> int | None:
        failures = await self._inner.insert_counting_failures(saga, since, reasons)
        if failures is not None and self._uow.crash_after == "pending":
            self._uow.crash_on_commit = True
        return failures

    async def insert_posting(self, saga: Saga, job: Job, detail: str, **kw: Any) -> Any:
        inserted, failures = await self._inner.insert_posting(saga, job, detail, **kw)
        if inserted and self._uow.crash_after == "pending":
            self._uow.crash()  # the step committed by itself: no commit follows to crash after
        return inserted, failures

    async def lock_with_job(
        self, saga_id: str, *, lock_job: bool = True, assumed: object | None = None
    ) -> tuple[Saga | None, Job | None]:
        saga, job = await self._inner.lock_with_job(saga_id, lock_job=lock_job, assumed=assumed)
        return saga, self._uow.jobs.watch(job)

    async def save(self, saga: Saga) -> None:
        if self._uow.crash_after == "confirming" and saga.state is SagaState.CONFIRMING:
            self._uow.crash_on_commit = True
        await self._inner.save(saga)


class FaultyUnitOfWork:
    """A unit of work that crashes right after committing the chosen step, and/or makes marked
    jobs refuse activation."""

    def __init__(
        self,
        inner: JobsUnitOfWork,
        *,
        crash_after: str = "",
        crash: Callable[[], Any] = lambda: None,
        refuse_activation_marker: str = "",
    ) -> None:
        self.inner = inner
        self.crash_after = crash_after
        self.crash = crash
        self.refuse_activation_marker = refuse_activation_marker
        self.crash_on_commit = False

    async def __aenter__(self) -> FaultyUnitOfWork:
        await self.inner.__aenter__()
        self.jobs = _WatchedJobs(self.inner.jobs, self)
        self.sagas = _WatchedSagas(self.inner.sagas, self)
        self.settlements = self.inner.settlements
        self.applications = self.inner.applications
        self.candidate_views = self.inner.candidate_views
        self.rate_limits = self.inner.rate_limits
        self.crash_on_commit = False
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.inner.__aexit__(*exc_info)

    def __getattr__(self, name: str) -> Any:
        # The repositories no fault is injected into (the marketplace's) are the inner ones.
        return getattr(self.inner, name)

    async def commit(self) -> None:
        await self.inner.commit()
        if self.crash_on_commit:
            self.crash_on_commit = False
            self.crash()
