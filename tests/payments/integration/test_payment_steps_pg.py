"""A card payment's Try and Confirm on real PostgreSQL, counted in statements (issue 13): a first
Try is one statement of its own (its barrier row, payment and audit entry, written only if the
barrier row is new), recording the provider's answer is one more (the payment as the request
committed it, not read or locked again); a Try whose branch has its barrier row goes through the
barrier as before (replay, mismatch, Try after Cancel), and a payment that changed during the
provider call is recorded under its lock instead, nothing of the first attempt written."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hirepay_platform.db import create_engine, make_session_factory
from hirepay_platform.tcc import IdempotencyMismatch, TccBranch
from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain import commands, errors
from payments.domain.model import Method, PaymentState
from payments.domain.provider import ProviderPayment
from payments.service_layer import handlers
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.in_flight import InFlight
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import FakeProvider

_IDS = itertools.count(random.randrange(10**6, 10**9, 10**4))


@pytest.fixture(scope="module")
def database_url(make_service_database) -> str:
    return make_service_database("payments")


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


class HookedProvider(FakeProvider):
    """The fake provider; `during_capture` runs while a capture call is at the provider."""

    def __init__(self) -> None:
        super().__init__()
        self._ids = _IDS
        self.during_capture: Callable[[], Awaitable[None]] | None = None

    async def capture(
        self, intent_id: str, amount_minor: int, idempotency_key: str
    ) -> ProviderPayment:
        if self.during_capture is not None:
            await self.during_capture()
        return await super().capture(intent_id, amount_minor, idempotency_key)


class World:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions: async_sessionmaker[AsyncSession] = make_session_factory(engine)
        self.provider = HookedProvider()
        self.in_flight = InFlight()
        self.statements: list[str] = []

    def deps(self) -> Deps:
        return Deps(
            SqlPaymentsUnitOfWork(self.sessions),
            ProviderRegistry([self.provider]),
            Policy(provider_timeout=1, poll_base=1, poll_max=4),
            in_flight=self.in_flight,
        )

    def _count(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(" ".join(statement.split()))

    async def counted(self, work: Awaitable[Any]) -> Any:
        self.statements.clear()
        sa_event.listen(self.engine.sync_engine, "before_cursor_execute", self._count)
        try:
            return await work
        finally:
            sa_event.remove(self.engine.sync_engine, "before_cursor_execute", self._count)

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.sessions() as session:
            return await session.scalar(text(sql), params)


@pytest.fixture
def world(engine: AsyncEngine) -> World:
    return World(engine)


def _authorize(gtx: str) -> commands.Authorize:
    return commands.Authorize(
        request_id=f"r-{gtx}",
        branch=TccBranch(gtx, "payment"),
        owner_id="company-1",
        amount_minor=2500,
        currency="USD",
        method=Method.CARD,
        payment_method_token="pm_card_visa",
        metadata={"subsystem": "jobs", "job_id": "job-1"},
        description="a job post",
        email="owner@example.com",
    )


def _locking(statements: list[str]) -> list[str]:
    """Locked reads of their own (not a guard's lock inside a write statement)."""
    return [s for s in statements if s.startswith("SELECT") and "FOR UPDATE" in s]


async def test_recording_the_providers_answer_is_one_statement_of_its_own(world: World) -> None:
    gtx = f"gtx-{next(_IDS)}"
    result = await world.counted(handlers.authorize(_authorize(gtx), world.deps()))
    assert result.payment.state is PaymentState.AUTHORIZED
    # The Try's barrier row with its payment and audit entry, one statement; then the answer
    # (payment, call record and transition entries) as one statement that locks and compares the
    # row itself. Each is a transaction of its own: no BEGIN or COMMIT round trips either.
    assert len(world.statements) == 2, world.statements
    assert not _locking(world.statements), world.statements
    assert world.statements[0].startswith("WITH guard AS (INSERT INTO tcc_barriers"), (
        world.statements
    )
    assert world.statements[1].startswith("WITH guard AS (SELECT payments.id"), world.statements

    capture = commands.Capture(f"c-{gtx}", TccBranch(gtx, "payment"), 0)
    done = await world.counted(handlers.capture(capture, world.deps()))
    assert done.payment.state is PaymentState.CAPTURED
    # The Confirm's barrier, the payment locked by its branch, the capture requested; then the
    # answer with the settlement event and the booking it owes, one statement again.
    assert len(world.statements) == 4, world.statements
    assert len(_locking(world.statements)) == 1, world.statements
    assert "INSERT INTO outbox" in world.statements[-1]

    pid = done.payment.id
    assert (
        await world.scalar("SELECT state FROM payments WHERE id = :p", p=pid)
        == PaymentState.CAPTURED.value
    )
    assert (
        await world.scalar(
            "SELECT count(*) FROM outbox WHERE payment_id = :p AND type = 'payment.captured'",
            p=pid,
        )
        == 1
    )
    assert (
        await world.scalar("SELECT count(*) FROM credit_grants WHERE payment_id = :p", p=pid) == 1
    )
    transitions = await world.scalar(
        "SELECT string_agg(reason, ',' ORDER BY id) FROM audit_log"
        " WHERE payment_id = :p AND action = 'transition'",
        p=pid,
    )
    assert transitions == "UNKNOWN -> AUTHORIZED,AUTHORIZED -> CAPTURED"


async def test_a_try_whose_branch_has_its_barrier_row_goes_through_the_barrier(
    world: World,
) -> None:
    gtx = f"gtx-{next(_IDS)}"
    first = await handlers.authorize(_authorize(gtx), world.deps())
    again = await world.counted(handlers.authorize(_authorize(gtx), world.deps()))
    assert again.replayed and again.payment.id == first.payment.id
    assert world.statements[0].startswith(
        "WITH guard AS (INSERT INTO tcc_barriers"
    )  # wrote nothing
    with pytest.raises(IdempotencyMismatch):
        await handlers.authorize(replace(_authorize(gtx), amount_minor=2600), world.deps())
    assert await world.scalar("SELECT count(*) FROM payments WHERE global_tx_id = :g", g=gtx) == 1
    attempts = "SELECT count(*) FROM audit_log WHERE payment_id = :p AND action = 'attempt'"
    assert await world.scalar(attempts, p=first.payment.id) == 1

    late = f"gtx-{next(_IDS)}"  # the saga cancelled before its Try arrived
    void = commands.Void(f"v-{late}", TccBranch(late, "payment"), "saga cancelled")
    assert (await handlers.void(void, world.deps())).null_compensation
    with pytest.raises(errors.PaymentVoided):
        await handlers.authorize(_authorize(late), world.deps())
    assert await world.scalar("SELECT count(*) FROM payments WHERE global_tx_id = :g", g=late) == 0


async def test_a_payment_changed_during_the_call_is_recorded_under_its_lock(
    world: World,
) -> None:
    gtx = f"gtx-{next(_IDS)}"
    authorized = (await handlers.authorize(_authorize(gtx), world.deps())).payment
    assert authorized is not None

    async def meanwhile() -> None:
        # Another transaction changes the row while the capture is at the provider (a column the
        # capture's own answer does not set).
        async with world.sessions() as session, session.begin():
            await session.execute(
                text("UPDATE payments SET void_reason = 'changed meanwhile' WHERE id = :p"),
                {"p": authorized.id},
            )

    world.provider.during_capture = meanwhile
    capture = commands.Capture(f"c-{gtx}", TccBranch(gtx, "payment"), 0)
    done = await world.counted(handlers.capture(capture, world.deps()))
    assert done.payment.state is PaymentState.CAPTURED
    assert done.payment.void_reason == "changed meanwhile"  # read under the lock, kept
    # The guarded statement applied nothing; then the row was read under its lock and written.
    assert world.statements[-3].startswith("WITH guard AS (SELECT payments.id"), world.statements
    assert _locking(world.statements[-2:-1]), world.statements
    pid = authorized.id
    row = {
        "state": await world.scalar("SELECT state FROM payments WHERE id = :p", p=pid),
        "reason": await world.scalar("SELECT void_reason FROM payments WHERE id = :p", p=pid),
    }
    assert row == {"state": "CAPTURED", "reason": "changed meanwhile"}
    for sql, expected in (
        ("SELECT count(*) FROM outbox WHERE payment_id = :p AND type = 'payment.captured'", 1),
        ("SELECT count(*) FROM credit_grants WHERE payment_id = :p", 1),
        (
            "SELECT count(*) FROM audit_log WHERE payment_id = :p AND action = 'transition'"
            " AND reason = 'AUTHORIZED -> CAPTURED'",
            1,
        ),
    ):
        assert await world.scalar(sql, p=pid) == expected, sql
