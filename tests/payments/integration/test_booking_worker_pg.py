"""The booking worker on real PostgreSQL (issue 13): a booking this process records (a capture's)
wakes the worker, which books it at once instead of at its next poll, and takes the bookings
recorded close together in one wallet call; a booking no notice announces (left by a process
that died, or recorded by another replica) is still booked by the poll."""

from __future__ import annotations

import asyncio
import functools
import itertools
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain.credits import CreditGrant, GrantStatus
from payments.domain.model import PaymentState
from payments.entrypoints.workers import run_credit_grants
from payments.service_layer.deps import Deps
from payments.service_layer.providers import ProviderRegistry
from payments.service_layer.wakeup import Wakeup
from tests.support.payments_fakes import FakeLedger, FakeProvider
from tests.support.payments_helpers import card_payment

_IDS = itertools.count(random.randrange(10**6, 10**9, 10**4))
INTERVAL = 0.2  # the worker's interval here: its idle pause grows to 1.6 s


class CountingLedger(FakeLedger):
    """The fake ledger, remembering the bookings of each move_many call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []

    async def move_many(self, grants: list[CreditGrant]) -> list[object]:  # type: ignore[override]
        self.calls.append([g.id for g in grants])
        return await super().move_many(grants)


@dataclass
class Worker:
    """The booking worker of a process whose units of work notify `owed`; `rounds` are the
    times its rounds began."""

    sessions: async_sessionmaker[AsyncSession]
    owed: Wakeup = field(default_factory=Wakeup)
    ledger: CountingLedger = field(default_factory=CountingLedger)
    rounds: list[float] = field(default_factory=list)
    ran: asyncio.Event = field(default_factory=asyncio.Event)

    async def next_round(self) -> None:
        self.ran.clear()
        await self.ran.wait()

    def deps(self) -> Deps:  # one per round of the worker
        self.rounds.append(time.monotonic())
        self.ran.set()
        return self._deps(functools.partial(SqlPaymentsUnitOfWork, self.sessions, owed=self.owed))

    def _deps(self, uow: Callable[[], SqlPaymentsUnitOfWork]) -> Deps:
        return Deps(uow(), ProviderRegistry([FakeProvider()]), ledger=self.ledger)

    async def owe(self, *, notify: bool = True) -> str:
        """A captured payment's booking recorded in a transaction of its own, by this process
        (`notify`: its unit of work tells the worker) or by another one."""
        n = next(_IDS)
        payment = card_payment(
            f"pay_bw{n}",
            f"gtx_bw{n}",
            state=PaymentState.CAPTURED,
            pending_op=None,
            captured_minor=100,
        )
        grant = CreditGrant.capture(payment, datetime.now(UTC))
        assert grant is not None
        owed = self.owed if notify else None
        async with SqlPaymentsUnitOfWork(self.sessions, owed=owed) as uow:
            await uow.credit_grants.owe(grant)
            await uow.commit()
        return grant.id

    def booked(self, grant_id: str) -> bool:
        return any(grant_id in call for call in self.ledger.calls)

    async def until_booked(self, grant_id: str, within: float) -> float:
        """Seconds until the worker booked `grant_id` (fails past `within`)."""
        start = time.monotonic()
        while not self.booked(grant_id):
            assert time.monotonic() - start < within, f"{grant_id} not booked in {within} s"
            await asyncio.sleep(0.01)
        return time.monotonic() - start

    async def backed_off(self) -> None:
        """Wait until the worker pauses well beyond its interval (idle), then until just after
        its next round."""
        while len(self.rounds) < 2 or self.rounds[-1] - self.rounds[-2] < 4 * INTERVAL:
            await self.next_round()
        await self.next_round()
        await asyncio.sleep(0.05)  # the round (empty) is over: the worker pauses >= 0.8 s


@pytest.fixture
async def worker(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[Worker]:
    w = Worker(sessions)
    stop = asyncio.Event()
    task = asyncio.create_task(run_credit_grants(w.deps, stop, interval=INTERVAL, owed=w.owed))
    yield w
    stop.set()
    await asyncio.wait_for(task, 5)


async def _status(sessions: async_sessionmaker[AsyncSession], grant_id: str) -> GrantStatus:
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        grant = await uow.credit_grants.get(grant_id)
    assert grant is not None
    return grant.status


async def test_a_booking_a_capture_owes_is_made_without_waiting_for_the_poll(
    worker: Worker, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await worker.backed_off()
    grant_id = await worker.owe()
    # The next poll is at least 0.75 s away: the notice, not the poll, made the round.
    assert await worker.until_booked(grant_id, within=2.0) < 0.4
    for _ in range(50):
        if await _status(sessions, grant_id) is GrantStatus.DONE:
            break
        await asyncio.sleep(0.02)
    assert await _status(sessions, grant_id) is GrantStatus.DONE


async def test_bookings_recorded_close_together_are_made_in_one_wallet_call(
    worker: Worker,
) -> None:
    await worker.backed_off()
    first = await worker.owe()
    await worker.until_booked(first, within=2.0)
    calls = len(worker.ledger.calls)
    later = [await worker.owe() for _ in range(5)]
    for grant_id in later:
        await worker.until_booked(grant_id, within=2.0)
    # One round per interval takes every booking recorded meanwhile (here all five at once;
    # a slow machine may split them), not a round and a wallet call per booking.
    assert len(worker.ledger.calls) - calls <= 2
    assert sorted(g for call in worker.ledger.calls[calls:] for g in call) == sorted(later)


async def test_a_booking_left_by_another_process_is_still_made_by_the_poll(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    w = Worker(sessions)
    # Recorded before this process started (its recorder died before booking it).
    left = await w.owe(notify=False)
    stop = asyncio.Event()
    task = asyncio.create_task(run_credit_grants(w.deps, stop, interval=INTERVAL, owed=w.owed))
    try:
        await w.until_booked(left, within=2.0)  # the first round
        await w.backed_off()
        # Recorded by another replica meanwhile: no notice here, the poll finds it (at most
        # the idle pause, 1.6 s, later).
        elsewhere = await w.owe(notify=False)
        waited = await w.until_booked(elsewhere, within=4.0)
        assert waited > 0.3  # found by the poll, not by a notice
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert await _status(sessions, elsewhere) is GrantStatus.DONE
