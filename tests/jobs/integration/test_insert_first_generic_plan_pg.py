"""A marketplace job's insert-first on (customer, request id) keeps working past PostgreSQL's five
custom plans on one connection (PAY-6 idempotency): its ON CONFLICT names the partial unique
index by the index's own literal condition. With the condition as a bound parameter PostgreSQL
inferred the arbiter index only while it planned with the value; from the sixth run on a pooled
connection its generic plan found none ("no unique or exclusion constraint matching the ON
CONFLICT specification") and the posting failed with INTERNAL_ERROR."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from hirepay_platform.db import create_engine, make_session_factory
from hirepay_platform.ids import new_id
from jobs.adapters.unit_of_work import SqlJobsUnitOfWork
from jobs.domain.marketplace import MarketJob, MarketJobFields, MarketJobStatus

RUNS = 8  # past the five custom plans PostgreSQL makes before it settles on a generic one


@pytest.fixture(scope="module")
async def sessions(make_service_database):
    url = await asyncio.to_thread(make_service_database, "jobs")
    # One connection: every run below reuses it and its prepared statement.
    engine = create_engine(url, pool_size=1, max_overflow=0)
    yield make_session_factory(engine)
    await engine.dispose()


def _job(customer: str) -> MarketJob:
    now = datetime.now(UTC)
    fields = MarketJobFields("Paint the fence", "Two coats of paint on the garden fence").validate()
    return MarketJob(new_id("mjob"), customer, fields, MarketJobStatus.OPEN, now, now)


async def _post(sessions, job: MarketJob, request_id: str) -> MarketJob:
    async with SqlJobsUnitOfWork(sessions) as uow:
        stored = await uow.market_jobs.add_if_absent(job, request_id)
        await uow.commit()
    return stored


async def test_insert_first_keeps_its_arbiter_index_on_a_generic_plan(sessions) -> None:
    customer = new_id("cust")
    first = _job(customer)
    assert (await _post(sessions, first, "req-0")).id == first.id
    for n in range(1, RUNS):
        job = _job(customer)
        assert (await _post(sessions, job, f"req-{n}")).id == job.id
    # A twin after the generic plan took over: the job stored first, no second row.
    replay = await _post(sessions, _job(customer), "req-0")
    assert replay.id == first.id
    async with SqlJobsUnitOfWork(sessions) as uow:
        stored = await uow.market_jobs.get(first.id)
    assert stored is not None and stored.id == first.id
