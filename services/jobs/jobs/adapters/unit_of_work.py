"""The jobs unit of work over PostgreSQL: one local transaction with the jobs repositories."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from hirepay_platform.db import SqlAlchemyUnitOfWork
from hirepay_platform.write_batch import BatchedSession
from jobs.adapters.application_repository import (
    SqlApplicationRepository,
    SqlCandidateViewRepository,
)
from jobs.adapters.escrow_repository import SqlDisputeRepository, SqlMoneyStepRepository
from jobs.adapters.event_repository import NotifyingOfferRepository, SqlMarketplaceOutbox
from jobs.adapters.marketplace_repository import (
    SqlEngagementRepository,
    SqlJobRequestRepository,
    SqlMarketJobRepository,
    SqlOfferRepository,
)
from jobs.adapters.repositories import (
    SqlJobRepository,
    SqlPostingRateRepository,
    SqlSagaRepository,
    SqlSettlementRepository,
)

_R = TypeVar("_R")


class SqlJobsUnitOfWork(SqlAlchemyUnitOfWork):
    """`async with uow:` opens a transaction; it rolls back unless `await uow.commit()`."""

    # Its repositories run Core statements only: one Core connection, not an ORM session.
    core_only = True

    jobs: SqlJobRepository
    sagas: SqlSagaRepository

    def _attach(self, session: Any) -> None:
        # Repositories see the session through the batch of writes (sent as one statement).
        batching = BatchedSession(session)
        self._batching = batching
        self._writes = batching.batch
        self.jobs = SqlJobRepository(batching)
        self.sagas = SqlSagaRepository(batching)
        # The others are made on first use in this transaction (_repository): a saga step uses
        # jobs and sagas only, and made eleven more each time (issue 13).
        self._repositories: dict[str, Any] = {}

    def _repository(self, name: str, make: Callable[[BatchedSession], _R]) -> _R:
        """This transaction's repository `name`, made on first use."""
        repository = self._repositories.get(name)
        if repository is None:
            repository = self._repositories[name] = make(self._batching)
        return repository  # type: ignore[no-any-return]

    @property
    def settlements(self) -> SqlSettlementRepository:
        return self._repository("settlements", SqlSettlementRepository)

    @property
    def applications(self) -> SqlApplicationRepository:
        return self._repository("applications", SqlApplicationRepository)

    @property
    def candidate_views(self) -> SqlCandidateViewRepository:
        return self._repository("candidate_views", SqlCandidateViewRepository)

    @property
    def rate_limits(self) -> SqlPostingRateRepository:
        return self._repository("rate_limits", SqlPostingRateRepository)

    @property
    def market_jobs(self) -> SqlMarketJobRepository:
        return self._repository("market_jobs", SqlMarketJobRepository)

    @property
    def job_requests(self) -> SqlJobRequestRepository:
        return self._repository("job_requests", SqlJobRequestRepository)

    @property
    def engagements(self) -> SqlEngagementRepository:
        return self._repository("engagements", SqlEngagementRepository)

    @property
    def outbox(self) -> SqlMarketplaceOutbox:
        return self._repository("outbox", SqlMarketplaceOutbox)

    @property
    def offers(self) -> SqlOfferRepository:
        # Offers tell their changes through the outbox (offer.received / accepted / ...).
        return self._repository("offers", lambda b: NotifyingOfferRepository(b, self.outbox))

    @property
    def money_steps(self) -> SqlMoneyStepRepository:
        return self._repository("money_steps", SqlMoneyStepRepository)

    @property
    def disputes(self) -> SqlDisputeRepository:
        return self._repository("disputes", SqlDisputeRepository)

    async def commit(self) -> None:
        if self.sagas.assumed is not None:
            # Rows assumed, not read: nothing was sent yet, the writes go as one statement alone.
            await self.sagas.commit_assumed()
            self._committed = True
            return
        await self._writes.flush()
        await super().commit()
        self.sagas.committed = True  # the versions of the rows it stored moved (see stored)
