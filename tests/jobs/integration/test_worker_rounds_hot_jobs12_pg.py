"""The recovery and escrow workers' rounds run their statements hot (issue 13): a round that finds
nothing due (the usual one, about four a second between them) takes the pool's connection and
reads without SQLAlchemy's Connection and with no greenlet; a round that finds a due saga still
leases it, and the stuck count is as before (the claim, lease and count tests of
test_jobs_postgres.py and test_escrow_pg.py run these statements hot too)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hirepay_platform.db import create_engine, make_session_factory
from jobs.adapters.unit_of_work import SqlJobsUnitOfWork
from jobs.domain import commands
from jobs.domain.posting_saga import PaymentMethod, Saga, SagaState
from jobs.service_layer.deps import Deps
from jobs.service_layer.handlers import settlement
from jobs.service_layer.marketplace import money_steps
from tests.support.jobs_fakes import FakeParticipants, make_config
from tests.support.python_calls import greenlet_switches


@pytest.fixture
async def sessions(make_service_database):
    url = await asyncio.to_thread(make_service_database, "jobs")
    engine = create_engine(url, pool_size=5, max_overflow=0)
    yield make_session_factory(engine)
    await engine.dispose()


def _deps(sessions: Any) -> Deps:
    return Deps.build(lambda: SqlJobsUnitOfWork(sessions), make_config(), FakeParticipants())


async def _rounds(deps: Deps) -> tuple[int, int]:
    recovered = await settlement.recover_due(commands.RecoverSagas(), deps.fresh())
    stepped = await money_steps.recover_due(deps.fresh())
    return recovered, stepped


async def test_a_round_with_nothing_due_makes_no_greenlet(sessions):
    deps = _deps(sessions)
    for _ in range(2):  # each statement's first run is SQLAlchemy's (its plan kept)
        assert await _rounds(deps) == (0, 0)
    with greenlet_switches() as switches:
        for _ in range(3):
            assert await _rounds(deps) == (0, 0)
    assert switches == []


async def test_a_due_saga_is_leased_and_the_stuck_counted_after_warm_rounds(sessions):
    deps = _deps(sessions)
    for _ in range(2):
        await _rounds(deps)
    now = datetime.now(UTC)
    saga = Saga(
        id="saga_hot",
        company_id="co_1",
        request_id="k_hot",
        fingerprint="fp",
        actor="co_1",
        state=SagaState.CONFIRMING,
        method=PaymentMethod.CARD,
        created_at=now - timedelta(hours=2),
        updated_at=now - timedelta(hours=2),
        deadline_at=now - timedelta(hours=1),
    )
    async with SqlJobsUnitOfWork(sessions) as uow:
        await uow.sagas.insert(saga)
        await uow.commit()
    async with SqlJobsUnitOfWork(sessions) as uow:
        assert await uow.sagas.count_stuck(now) == 1
        claimed = await uow.sagas.claim_due(now, "me", now + timedelta(seconds=30), 10)
        await uow.commit()
    assert [s.id for s in claimed] == ["saga_hot"]
    assert claimed[0].lease_owner == "me"
    async with SqlJobsUnitOfWork(sessions) as uow:  # leased: not due again meanwhile
        assert await uow.sagas.claim_due(now, "other", now + timedelta(seconds=30), 10) == []
        await uow.commit()
