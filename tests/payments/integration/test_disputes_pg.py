"""Dispute webhooks on real PostgreSQL (ESC-1, API-3): twin deliveries of one event and different
events of one dispute applied at once record one dispute and book each of its balance transactions
once; a process that dies while applying leaves nothing, and the redelivery books it once; the
bookings reach the ledger by the booking worker, balances asserted."""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payments.adapters.dispute_repository import SqlDisputeRepository
from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain import commands
from payments.domain.disputes import DisputeMoney, DisputeStatus, ProviderDispute
from payments.domain.model import Payment, PaymentState
from payments.domain.provider import EventSubject, ProviderEvent
from payments.service_layer import handlers
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import credits
from payments.service_layer.handlers.disputes import DisputeEventOutcome, apply_dispute_event
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import Crash, DisputingProvider, FakeLedger
from tests.support.payments_helpers import authorize_command

_IDS = itertools.count(random.randrange(10**6, 10**9, 10**4))
AMOUNT = 2500  # payments_helpers.authorize_command's
FEE = 1500


class World:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.provider = DisputingProvider()
        self.provider._ids = _IDS
        self.wallet = FakeLedger()

    def deps(self) -> Deps:
        """One request's: its own unit of work (the servicer makes one per call)."""
        return Deps(
            SqlPaymentsUnitOfWork(self.sessions),
            ProviderRegistry([self.provider]),
            Policy(provider_timeout=1, poll_base=1, poll_max=4),
            ledger=self.wallet,
        )

    async def captured(self) -> Payment:
        gtx = f"gtx-{next(_IDS)}"
        deps = self.deps()
        await handlers.authorize(authorize_command(gtx), deps)
        payment = (await handlers.capture(commands.Capture(f"c-{gtx}", branch(gtx)), deps)).payment
        assert payment is not None and payment.state is PaymentState.CAPTURED
        await credits.settle_due_grants(self.deps())
        return payment

    def disputed(self, payment: Payment, status: DisputeStatus, *money: DisputeMoney) -> str:
        dispute_id = f"dp_{payment.id}"
        self.provider.disputes[dispute_id] = ProviderDispute(
            dispute_id, payment.provider_payment_id, AMOUNT, "USD", status, "fraudulent", money
        )
        return dispute_id

    async def deliver(self, event_id: str, kind: str, dispute_id: str) -> DisputeEventOutcome:
        event = ProviderEvent(
            id=event_id,
            type=f"charge.dispute.{kind}",
            created=datetime.now(UTC),
            subject=EventSubject.DISPUTE,
            object_id=dispute_id,
        )
        done = await apply_dispute_event(self.deps(), self.provider, event, {"id": event_id})
        assert done is not None
        return done

    async def rows(self, sql: str, **params: object) -> list[tuple[object, ...]]:
        async with self.sessions() as session:
            return [tuple(r) for r in (await session.execute(text(sql), params)).all()]

    def balances(self, payment: Payment) -> tuple[int, int, int]:
        """The USD balances of the clearing account, platform revenue and the provider's fees
        (the fake wallet)."""
        return (
            self.wallet.balances.get(("provider:stripe", "USD"), 0),
            self.wallet.balances.get(("platform", "USD"), 0),
            self.wallet.balances.get(("provider:stripe:fees", "USD"), 0),
        )


def _won() -> float:
    labels = {"provider": "stripe", "outcome": "won"}
    return REGISTRY.get_sample_value("hirepay_payment_disputes_closed_total", labels) or 0.0


def branch(gtx: str):  # type: ignore[no-untyped-def]
    return authorize_command(gtx).branch


@pytest.fixture
def world(sessions: async_sessionmaker[AsyncSession]) -> World:
    return World(sessions)


def _money(payment: Payment, kind: str, amount: int, fee: int) -> DisputeMoney:
    return DisputeMoney(f"txn_{kind}_{payment.id}", amount, fee, "USD")


async def test_twin_and_concurrent_events_record_one_dispute_and_book_each_money_once(
    world: World,
) -> None:
    payment = await world.captured()
    clearing, revenue, fees = world.balances(payment)
    withdrawal = _money(payment, "w", -AMOUNT, FEE)
    dp = world.disputed(payment, DisputeStatus.NEEDS_RESPONSE, withdrawal)
    created, withdrawn = f"evt_c_{dp}", f"evt_w_{dp}"
    outcomes = await asyncio.gather(
        *(world.deliver(created, "created", dp) for _ in range(4)),
        *(world.deliver(withdrawn, "funds_withdrawn", dp) for _ in range(4)),
    )
    assert sum(not o.duplicate for o in outcomes) == 2  # each event applied once
    assert sum(o.applied for o in outcomes) >= 1
    assert await world.rows(
        "SELECT status, withdrawn_minor, fee_minor FROM disputes WHERE payment_id = :p",
        p=payment.id,
    ) == [("needs_response", AMOUNT, FEE)]
    assert await world.rows(
        "SELECT count(*) FROM credit_grants WHERE payment_id = :p AND kind = 'dispute'",
        p=payment.id,
    ) == [(1,)]
    assert await world.rows(
        "SELECT count(*) FROM provider_events WHERE object_id = :d AND applied", d=dp
    ) == [(2,)]
    await credits.settle_due_grants(world.deps())
    assert world.balances(payment) == (clearing + AMOUNT + FEE, revenue - AMOUNT, fees - FEE)

    # Won: the reinstatement, by two different events at once, booked once.
    reinstatement = _money(payment, "r", AMOUNT, 0)
    world.disputed(payment, DisputeStatus.WON, withdrawal, reinstatement)
    won = _won()
    await asyncio.gather(
        *(world.deliver(f"evt_r_{dp}", "funds_reinstated", dp) for _ in range(3)),
        *(world.deliver(f"evt_x_{dp}", "closed", dp) for _ in range(3)),
    )
    await credits.settle_due_grants(world.deps())
    assert world.balances(payment) == (clearing + FEE, revenue, fees - FEE)
    assert _won() == won + 1  # closed once, whichever event closed it
    assert await world.rows(
        "SELECT status, withdrawn_minor, reinstated_minor, closed_at IS NOT NULL FROM disputes"
        " WHERE id = :d",
        d=dp,
    ) == [("won", AMOUNT, AMOUNT, True)]
    assert sorted(world.wallet.transfers) == sorted(
        [
            f"payment:{payment.id}:capture",
            f"payment:{payment.id}:dispute:{withdrawal.id}",
            f"payment:{payment.id}:dispute:{reinstatement.id}",
        ]
    )
    # The ledger auditor expects each of them: revenue back out, then in again.
    async with world.deps().uow as uow:
        expected = await uow.credit_grants.expected(datetime.now(UTC) + timedelta(hours=1))
    mine = {
        e.transfer_id: (e.amount, e.refund, e.revenue)
        for e in expected
        if e.subject_id == payment.id
    }
    assert mine == {
        f"payment:{payment.id}:capture": (AMOUNT, False, AMOUNT),
        f"payment:{payment.id}:dispute:{withdrawal.id}": (AMOUNT, True, -AMOUNT),
        f"payment:{payment.id}:dispute:{reinstatement.id}": (AMOUNT, False, AMOUNT),
    }


async def test_a_process_that_dies_applying_leaves_nothing_and_the_redelivery_books_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    payment = await world.captured()
    clearing, revenue, fees = world.balances(payment)
    dp = world.disputed(payment, DisputeStatus.LOST, _money(payment, "w", -AMOUNT, FEE))
    real_save = SqlDisputeRepository.save

    async def dies(self: SqlDisputeRepository, dispute: object) -> None:
        monkeypatch.setattr(SqlDisputeRepository, "save", real_save)
        raise Crash()

    monkeypatch.setattr(SqlDisputeRepository, "save", dies)
    with pytest.raises(Crash):
        await world.deliver(f"evt_{dp}", "closed", dp)
    assert await world.rows("SELECT count(*) FROM disputes WHERE id = :d", d=dp) == [(0,)]
    assert await world.rows("SELECT count(*) FROM provider_events WHERE object_id = :d", d=dp) == [
        (0,)
    ]
    again = await world.deliver(f"evt_{dp}", "closed", dp)  # the provider delivers it again
    assert again.applied and not again.duplicate
    assert (await world.deliver(f"evt_{dp}", "closed", dp)).duplicate
    await credits.settle_due_grants(world.deps())
    # Lost: the money stays withdrawn, the fee taken.
    assert world.balances(payment) == (clearing + AMOUNT + FEE, revenue - AMOUNT, fees - FEE)
    assert await world.rows("SELECT status, fee_minor FROM disputes WHERE id = :d", d=dp) == [
        ("lost", FEE)
    ]


def _fee_view(payment: Payment, fee: int, hour: int) -> ProviderDispute:
    """A PayPal-like dispute of the payment: its hold and a running chargeback fee, as PayPal
    showed it at `hour` (its update time)."""
    dp = f"dp_{payment.id}"
    return ProviderDispute(
        dp,
        payment.provider_payment_id,
        AMOUNT,
        "USD",
        DisputeStatus.NEEDS_RESPONSE,
        "fraudulent",
        (
            DisputeMoney(f"{dp}:held", -AMOUNT, 0, "USD"),
            DisputeMoney(f"{dp}:fee:CHARGEBACK_FEE", 0, fee, "USD", running=True),
        ),
        updated_at=datetime(2026, 12, 1, hour, tzinfo=UTC),
    )


async def test_concurrent_events_of_a_changed_fee_book_its_difference_once(world: World) -> None:
    """A fee changed after it was booked: the events that bring the change, applied at once,
    take turns on the dispute's row and book the difference once; a view older than the one
    applied, applied after it, books nothing (the ledger ends at the provider's last fee)."""
    payment = await world.captured()
    clearing, revenue, fees = world.balances(payment)
    dp = f"dp_{payment.id}"
    world.provider.disputes[dp] = _fee_view(payment, FEE, 10)
    await asyncio.gather(
        *(world.deliver(f"evt_c_{dp}", "created", dp) for _ in range(3)),
        *(world.deliver(f"evt_u_{dp}", "updated", dp) for _ in range(3)),
    )
    await credits.settle_due_grants(world.deps())
    assert world.balances(payment) == (clearing + AMOUNT + FEE, revenue - AMOUNT, fees - FEE)

    world.provider.disputes[dp] = _fee_view(payment, FEE + 700, 11)  # PayPal raised its fee
    outcomes = await asyncio.gather(
        *(world.deliver(f"evt_u2_{dp}", "updated", dp) for _ in range(4)),
        *(world.deliver(f"evt_u3_{dp}", "updated", dp) for _ in range(4)),
    )
    assert sum(not o.duplicate for o in outcomes) == 2
    world.provider.disputes[dp] = _fee_view(payment, FEE, 10)  # re-fetched before the change
    late = await world.deliver(f"evt_u4_{dp}", "updated", dp)
    assert not late.applied and not late.duplicate
    await credits.settle_due_grants(world.deps())
    assert world.balances(payment) == (
        clearing + AMOUNT + FEE + 700,
        revenue - AMOUNT,
        fees - FEE - 700,
    )
    assert await world.rows(
        "SELECT refund_id FROM credit_grants WHERE payment_id = :p AND kind = 'dispute'"
        " ORDER BY refund_id",
        p=payment.id,
    ) == [(f"{dp}:fee:CHARGEBACK_FEE",), (f"{dp}:fee:CHARGEBACK_FEE:2",), (f"{dp}:held",)]
    assert await world.rows(
        "SELECT fee_minor, provider_updated_at FROM disputes WHERE id = :d", d=dp
    ) == [(FEE + 700, datetime(2026, 12, 1, 11, tzinfo=UTC))]
