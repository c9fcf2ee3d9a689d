"""The jobs unit of work over PostgreSQL: one local transaction with the jobs repositories."""

from __future__ import annotations

from typing import Any

from hirepay_platform.db import SqlAlchemyUnitOfWork
from hirepay_platform.write_batch import BatchedSession
from jobs.adapters.application_repository import (
    SqlApplicationRepository,
    SqlCandidateViewRepository,
)
from jobs.adapters.escrow_repository import (
    SqlDisputeRepository,
    SqlEscrowRefundRepository,
    SqlMoneyStepRepository,
)
from jobs.adapters.event_repository import NotifyingOfferRepository, SqlMarketplaceOutbox
from jobs.adapters.marketplace_repository import (
    SqlEngagementRepository,
    SqlJobRequestRepository,
    SqlMarketJobRepository,
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

    # Made on first use in each transaction (SqlAlchemyUnitOfWork): a saga step uses jobs and
    # sagas only, and made eleven more each time (issue 13).
    made_on_first_use = {
        "settlements": lambda uow: SqlSettlementRepository(uow.batched),
        "applications": lambda uow: SqlApplicationRepository(uow.batched),
        "candidate_views": lambda uow: SqlCandidateViewRepository(uow.batched),
        "rate_limits": lambda uow: SqlPostingRateRepository(uow.batched),
        "market_jobs": lambda uow: SqlMarketJobRepository(uow.batched),
        "job_requests": lambda uow: SqlJobRequestRepository(uow.batched),
        "engagements": lambda uow: SqlEngagementRepository(uow.batched),
        "outbox": lambda uow: SqlMarketplaceOutbox(uow.batched),
        # Offers tell their changes through the outbox (offer.received / accepted / ...).
        "offers": lambda uow: NotifyingOfferRepository(uow.batched, uow.outbox),
        "money_steps": lambda uow: SqlMoneyStepRepository(uow.batched),
        "disputes": lambda uow: SqlDisputeRepository(uow.batched),
        "escrow_refunds": lambda uow: SqlEscrowRefundRepository(uow.batched),
    }

    jobs: SqlJobRepository
    sagas: SqlSagaRepository
    settlements: SqlSettlementRepository
    applications: SqlApplicationRepository
    candidate_views: SqlCandidateViewRepository
    rate_limits: SqlPostingRateRepository
    market_jobs: SqlMarketJobRepository
    job_requests: SqlJobRequestRepository
    engagements: SqlEngagementRepository
    outbox: SqlMarketplaceOutbox
    offers: NotifyingOfferRepository
    money_steps: SqlMoneyStepRepository
    disputes: SqlDisputeRepository
    escrow_refunds: SqlEscrowRefundRepository

    def _attach(self, session: Any) -> None:
        # Repositories see the session through the batch of writes (sent as one statement).
        batching = BatchedSession(session)
        self.batched = batching  # what the repositories made on first use are given
        self._writes = batching.batch
        self.jobs = SqlJobRepository(batching)
        self.sagas = SqlSagaRepository(batching)

    async def commit(self) -> None:
        if self.sagas.assumed is not None:
            # Rows assumed, not read: nothing was sent yet, the writes go as one statement alone.
            await self.sagas.commit_assumed()
            self._committed = True
            return
        await self._writes.flush()
        await super().commit()
        self.sagas.committed = True  # the versions of the rows it stored moved (see stored)
