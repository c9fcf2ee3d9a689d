"""The provider reconciliation and captures under way, on PostgreSQL (OPS-3, round 12): a finding
is judged again with the payment read anew after the provider's read (one read by primary key,
in a transaction of its own, so it sees a capture committed while the round went on), and only
on a finding: a round whose payments agree reads none."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hirepay_platform.db import create_engine, make_session_factory
from hirepay_platform.tcc import TccBranch
from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain import commands
from payments.domain.model import PaymentState
from payments.domain.reconciliation import LastCheck, MismatchKind
from payments.service_layer import handlers
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import audit
from payments.service_layer.providers import ProviderRegistry
from tests.payments.unit.test_reconcile import _captured_behind_our_back
from tests.payments.unit.test_reconcile_race_rec12 import CAPTURED_THERE, RaceProvider
from tests.support.payments_fakes import Clock
from tests.support.payments_helpers import authorize_command

# The payment read by primary key (the repository's `get`), as sent.
BY_ID = "WHERE payments.id = $1"


@pytest.fixture
async def sessions(
    make_service_database: Callable[[str], str],
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A database of its own for each test: no other test's open records in its rounds."""
    url = await asyncio.to_thread(make_service_database, "payments")
    engine = create_engine(url)
    yield make_session_factory(engine)
    await engine.dispose()


class World:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.provider = RaceProvider()
        self.clock = Clock()

    def deps(self) -> Deps:
        return Deps(
            SqlPaymentsUnitOfWork(self.sessions),
            ProviderRegistry([self.provider]),
            Policy(provider_timeout=1),
            clock=self.clock,
        )

    async def authorized(self, gtx: str) -> str:
        return (await handlers.authorize(authorize_command(gtx), self.deps())).payment.id

    async def capture(self, gtx: str) -> PaymentState:
        cmd = commands.Capture(f"cap-{gtx}", TccBranch(gtx, "payment"))
        return (await handlers.capture(cmd, self.deps())).payment.state

    async def round(self) -> audit.Reconciliation:
        self.clock.advance(60)
        return await audit.reconcile_provider(commands.ReconcileProvider(), self.deps)

    async def last(self, payment_id: str) -> LastCheck:
        async with SqlPaymentsUnitOfWork(self.sessions) as uow:
            return (await uow.reconciliations.last_checks([payment_id]))[payment_id]


async def test_a_capture_committed_between_the_rounds_read_and_the_providers_is_no_mismatch(
    sessions, round_trips
):
    world = World(sessions)
    payment_id = await world.authorized("gtx-race")

    async def capture_now() -> None:  # committed after the round's read, before the provider's
        assert await world.capture("gtx-race") is PaymentState.CAPTURED

    world.provider.before_read = capture_now
    result = await world.round()
    assert (result.checked, result.mismatches) == (1, [])
    assert await world.last(payment_id) == LastCheck(world.clock())  # recorded as agreeing


async def test_a_finding_costs_one_read_by_primary_key_and_an_agreement_none(sessions, round_trips):
    world = World(sessions)
    ids = [await world.authorized(f"gtx-{n}") for n in range(3)]
    with round_trips:
        agreed = await world.round()
    assert (agreed.checked, agreed.mismatches) == (3, [])
    assert not [s for s in round_trips.statements if BY_ID in s], round_trips.statements

    _captured_behind_our_back(world.provider)  # a real mismatch, each of the three
    with round_trips:
        found = await world.round()
    assert sorted((m.payment_id, m.detail) for m in found.mismatches) == sorted(
        (p, CAPTURED_THERE) for p in ids
    )
    assert len([s for s in round_trips.statements if BY_ID in s]) == 3, round_trips.statements
    found_ = ((MismatchKind.CHARGE, CAPTURED_THERE),)
    assert await world.last(ids[0]) == LastCheck(world.clock(), found_)
