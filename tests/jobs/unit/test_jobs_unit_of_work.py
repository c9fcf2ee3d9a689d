"""The jobs unit of work's repositories (issue 13: made on first use in each transaction)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import create_async_engine

from hirepay_platform.db import make_session_factory
from jobs.adapters.event_repository import NotifyingOfferRepository
from jobs.adapters.unit_of_work import SqlJobsUnitOfWork

_OTHERS = (
    "settlements",
    "applications",
    "candidate_views",
    "rate_limits",
    "market_jobs",
    "job_requests",
    "offers",
    "engagements",
    "outbox",
    "money_steps",
    "disputes",
)


async def test_each_transaction_gets_its_own_repositories_made_on_first_use():
    # Nothing connects: the unit of work takes a connection with its first statement only.
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:9/none")
    uow = SqlJobsUnitOfWork(make_session_factory(engine))
    try:
        async with uow:
            first = {name: getattr(uow, name) for name in _OTHERS}
            # The same one for the rest of the transaction, on its session.
            assert all(getattr(uow, name) is repo for name, repo in first.items())
            assert uow.settlements.session is uow.jobs.session
            assert isinstance(uow.offers, NotifyingOfferRepository)
            assert uow.offers._outbox is uow.outbox
        async with uow:
            # The next transaction's are new (bound to its own session), made when first used.
            assert not set(_OTHERS) & set(vars(uow))
            assert all(getattr(uow, name) is not first[name] for name in _OTHERS)
    finally:
        await engine.dispose()
