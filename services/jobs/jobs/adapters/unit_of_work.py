"""The jobs unit of work over PostgreSQL: one local transaction with the jobs repositories."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from hirepay_platform.db import SqlAlchemyUnitOfWork
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

    def _attach(self, session: AsyncSession) -> None:
        self.jobs = SqlJobRepository(session)
        self.sagas = SqlSagaRepository(session)
        self.settlements = SqlSettlementRepository(session)
        self.applications = SqlApplicationRepository(session)
        self.candidate_views = SqlCandidateViewRepository(session)
        self.rate_limits = SqlPostingRateRepository(session)
        self.market_jobs = SqlMarketJobRepository(session)
        self.job_requests = SqlJobRequestRepository(session)
        self.engagements = SqlEngagementRepository(session)
        self.outbox = SqlMarketplaceOutbox(session)
        # Offers tell their changes through the outbox (offer.received / accepted / ...).
        self.offers = NotifyingOfferRepository(session, self.outbox)
        self.money_steps = SqlMoneyStepRepository(session)
        self.disputes = SqlDisputeRepository(session)
