"""Reads of sagas and jobs by a list of ids (the settlement consumer's burst, the auditor's pages
of hundreds) bind the ids as one comma-joined string split by PostgreSQL (sql_lists), not an array
whose every element asyncpg checks in Python (issue 13); an id holding a comma, or an empty one
(ids come from other services' events and reports), is read through the array as before."""

from __future__ import annotations

import asyncio
import cProfile
import pstats
from datetime import UTC, datetime, timedelta

import pytest

from hirepay_platform.db import create_engine, make_session_factory
from jobs.adapters.unit_of_work import SqlJobsUnitOfWork
from jobs.domain.posting_saga import PaymentMethod, Saga, SagaState


@pytest.fixture
async def sessions(make_service_database):
    url = await asyncio.to_thread(make_service_database, "jobs")
    engine = create_engine(url, pool_size=2, max_overflow=0)
    yield make_session_factory(engine)
    await engine.dispose()


def _saga(saga_id: str, now: datetime) -> Saga:
    return Saga(
        id=saga_id,
        company_id="co_1",
        request_id=f"k-{saga_id}",
        fingerprint="fp",
        actor="co_1",
        state=SagaState.CONFIRMING,
        method=PaymentMethod.CARD,
        created_at=now,
        updated_at=now,
        deadline_at=now + timedelta(minutes=15),
    )


async def _insert(sessions, ids: list[str]) -> None:
    now = datetime.now(UTC)
    async with SqlJobsUnitOfWork(sessions) as uow:
        for saga_id in ids:
            await uow.sagas.insert(_saga(saga_id, now))
        await uow.commit()


async def _get_many(sessions, ids: list[str]) -> dict[str, Saga]:
    async with SqlJobsUnitOfWork(sessions) as uow:
        return await uow.sagas.get_many(ids)


def _asyncpg_abstract_checks(profile: cProfile.Profile) -> int:
    """Abstract-class checks made from asyncpg's execution (its Cython code has no frame of its
    own: the caller shown is asyncpg's Python around it), as tests/platform counts them."""
    return sum(
        n
        for (_, _, name), stats in pstats.Stats(profile).stats.items()  # type: ignore[attr-defined]
        if name == "__instancecheck__"
        for (caller, _, _), (n, *_) in stats[4].items()
        if "asyncpg" in caller.replace("\\", "/").split("/")
    )


async def test_a_page_of_ids_is_read_with_no_element_checked_in_python(sessions):
    ids = [f"saga_{i:03}" for i in range(120)]
    await _insert(sessions, ids)
    for _ in range(2):  # the statement's first run is SQLAlchemy's (its plan kept)
        await _get_many(sessions, ids[:3])
    profile = cProfile.Profile()
    profile.enable()
    found = await _get_many(sessions, [*ids, "saga_missing", ids[0]])
    profile.disable()
    assert sorted(found) == ids
    assert all(found[i].id == i and found[i].state is SagaState.CONFIRMING for i in ids)
    assert _asyncpg_abstract_checks(profile) == 0  # as an array: 121 elements, each checked
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
