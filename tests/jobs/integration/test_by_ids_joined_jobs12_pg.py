"""Reads of sagas and jobs by a list of ids (the settlement consumer's burst, the auditor's pages
of hundreds) bind the ids as one comma-joined string split by PostgreSQL (sql_lists), not an array
whose every element asyncpg checks in Python (issue 13); an id holding a comma, or an empty one
(ids come from other services' events and reports), is read through the array as before."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from hirepay_platform.db import create_engine, make_session_factory
from jobs.adapters.unit_of_work import SqlJobsUnitOfWork
from jobs.domain.posting_saga import Saga, SagaState
from tests.jobs.integration.test_jobs_postgres import _saga
from tests.support.asyncpg_checks import asyncpg_abstract_checks
from tests.support.python_calls import profiled


@pytest.fixture
async def sessions(make_service_database):
    url = await asyncio.to_thread(make_service_database, "jobs")
    engine = create_engine(url, pool_size=2, max_overflow=0)
    yield make_session_factory(engine)
    await engine.dispose()


async def _insert(sessions, ids: list[str]) -> None:
    now = datetime.now(UTC)
    async with SqlJobsUnitOfWork(sessions) as uow:
        for saga_id in ids:
            await uow.sagas.insert(replace(_saga(0, now), id=saga_id, request_id=f"k-{saga_id}"))
        await uow.commit()


async def _get_many(sessions, ids: list[str]) -> dict[str, Saga]:
    async with SqlJobsUnitOfWork(sessions) as uow:
        return await uow.sagas.get_many(ids)


async def test_a_page_of_ids_is_read_with_no_element_checked_in_python(sessions):
    ids = [f"saga_{i:03}" for i in range(120)]
    await _insert(sessions, ids)
    for _ in range(2):  # the statement's first run is SQLAlchemy's (its plan kept)
        await _get_many(sessions, ids[:3])
    with profiled() as profile:
        found = await _get_many(sessions, [*ids, "saga_missing", ids[0]])
    assert sorted(found) == ids
    assert all(found[i].id == i and found[i].state is SagaState.CONFIRMING for i in ids)
    assert asyncpg_abstract_checks(profile) == 0  # as an array: 121 elements, each checked
    async with SqlJobsUnitOfWork(sessions) as uow:
        jobs = await uow.jobs.get_many(["job_none", "job_other"])
    assert jobs == {}


@pytest.mark.parametrize("odd", ["saga,with,commas", ""])
async def test_an_id_with_a_comma_or_an_empty_one_is_read_through_the_array(sessions, odd):
    await _insert(sessions, [odd, "saga_plain"])
    for _ in range(2):
        found = await _get_many(sessions, [odd, "saga_plain", "saga_missing"])
        assert sorted(found) == sorted([odd, "saga_plain"])
        assert found[odd].id == odd
    # Split by commas, the same ids would have read other rows, or none.
    assert await _get_many(sessions, ["saga", "with", "commas"]) == {}
