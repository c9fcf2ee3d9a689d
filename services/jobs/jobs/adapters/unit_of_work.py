"""The jobs unit of work over PostgreSQL: one local transaction with the jobs repositories."""

from __future__ import annotations

from typing import Any

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


class SqlJobsUnitOfWork(SqlAlchemyUnitOfWork):
    """`async with uow:` opens a transaction; it rolls back unless `await uow.commit()`."""

    # Its repositories run Core statements only: one Core connection, not an ORM session.
    core_only = True

    jobs: SqlJobRepository
    sagas: SqlSagaRepository
    settlements: SqlSettlementRepository
    applications: SqlApplicationRepository
    candidate_views: SqlCandidateViewRepository
    rate_limits: SqlPostingRateRepository
    market_jobs: SqlMarketJobRepository
    job_requests: SqlJobRequestRepository
    offers: SqlOfferRepository
    engagements: SqlEngagementRepository
    outbox: SqlMarketplaceOutbox
    money_steps: SqlMoneyStepRepository
    disputes: SqlDisputeRepository

    def _attach(self, session: Any) -> None:
        # Repositories see the session through the batch of writes (sent as one statement).
        batching = BatchedSession(session)
        self._writes = batching.batch
        self.jobs = SqlJobRepository(batching)
        self.sagas = SqlSagaRepository(batching)
        self.settlements = SqlSettlementRepository(batching)
        self.applications = SqlApplicationRepository(batching)
        self.candidate_views = SqlCandidateViewRepository(batching)
        self.rate_limits = SqlPostingRateRepository(batching)
        self.market_jobs = SqlMarketJobRepository(batching)
        self.job_requests = SqlJobRequestRepository(batching)
        self.engagements = SqlEngagementRepository(batching)
        self.outbox = SqlMarketplaceOutbox(batching)
        # Offers tell their changes through the outbox (offer.received / accepted / ...).
        self.offers = NotifyingOfferRepository(batching, self.outbox)
        self.money_steps = SqlMoneyStepRepository(batching)
        self.disputes = SqlDisputeRepository(batching)

    async def commit(self) -> None:
        if self.sagas.assumed is not None:
            # Rows assumed, not read: nothing was sent yet, the writes go as one statement alone.
            await self.sagas.commit_assumed()
            self._committed = True
            return
        await self._writes.flush()
        await super().commit()
        self.sagas.committed = True  # the versions of the rows it stored moved (see stored)
