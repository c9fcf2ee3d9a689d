"""Webhook events on real PostgreSQL (API-3, issue 13): an event about a payment is stored and its
payment read in one statement, then only an event that is news is re-fetched and applied under the
payment's lock. Each event is stored once and applied once under concurrent deliveries, and an
event stored but never applied (the process died before applying it) is applied when delivered
again, never taken for a duplicate."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hirepay_platform.db import make_session_factory
from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain import commands, errors
from payments.domain.model import Payment, PaymentState
from payments.domain.provider import EventSubject, ProviderEvent, ProviderPayment, ProviderStatus
from payments.service_layer import handlers
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers.webhooks import EventOutcome, handle_provider_event
from payments.service_layer.in_flight import InFlight
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import Crash, FakeProvider
from tests.support.payments_helpers import authorize_command

# Provider ids unique across the tests of the module (they share one database).
_IDS = itertools.count(random.randrange(10**6, 10**9, 10**4))


@pytest.fixture(scope="module")
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_session_factory(engine)


class EventProvider(FakeProvider):
    """The fake provider, with verified events handed out by the delivery's bytes."""

    def __init__(self) -> None:
        super().__init__()
        self._ids = _IDS
        self.events: dict[bytes, ProviderEvent] = {}

    async def verify_event(self, payload: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        return self.events[payload]


class World:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.provider = EventProvider()
        self.in_flight = InFlight()

    def deps(self) -> Deps:
        """What one request gets: its own unit of work (the servicer makes one per call)."""
        return Deps(
            SqlPaymentsUnitOfWork(self.sessions),
            ProviderRegistry([self.provider]),
            Policy(provider_timeout=1, poll_base=1, poll_max=4),
            in_flight=self.in_flight,
        )

    async def authorized(self) -> Payment:
        gtx = f"gtx-{next(_IDS)}"
        payment = (await handlers.authorize(authorize_command(gtx), self.deps())).payment
        assert payment is not None and payment.state is PaymentState.AUTHORIZED
        return payment

    def captured_at_provider(self, payment: Payment) -> ProviderPayment:
        """The payment captured at the provider behind Hirepay's back (e.g. in its dashboard)."""
        intent = replace(
            self.provider.intents[payment.provider_payment_id],
            status=ProviderStatus.CAPTURED,
            amount_capturable=0,
            amount_received=2500,
        )
        self.provider.intents[intent.id] = intent
        return intent

    def delivery(self, payment: Payment, view: ProviderPayment) -> commands.ProviderEventDelivery:
        event_id = f"evt_{next(_IDS)}"
        body = f'{{"id": "{event_id}"}}'.encode()
        self.provider.events[body] = ProviderEvent(
            id=event_id,
            type="payment_intent.succeeded",
            created=datetime.now(UTC),
            subject=EventSubject.PAYMENT,
            object_id=payment.provider_payment_id,
            metadata={"hirepay_payment_id": payment.id},
            view=view,
            body={"id": event_id},
        )
        return commands.ProviderEventDelivery(provider="stripe", payload=body)

    async def deliver(self, delivery: commands.ProviderEventDelivery) -> EventOutcome:
        return await handle_provider_event(delivery, self.deps())

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.sessions() as session:
            return await session.scalar(text(sql), params)

    async def payment(self, payment_id: str) -> Payment:
        async with SqlPaymentsUnitOfWork(self.sessions) as uow:
            found = await uow.payments.get(payment_id)
        assert found is not None
        return found


@pytest.fixture
def world(sessions: async_sessionmaker[AsyncSession]) -> World:
    return World(sessions)


def event_id(world: World, delivery: commands.ProviderEventDelivery) -> str:
    return world.provider.events[delivery.payload].id


async def test_an_event_stored_but_never_applied_is_applied_when_delivered_again(
    world: World,
) -> None:
    payment = await world.authorized()
    delivery = world.delivery(payment, world.captured_at_provider(payment))
    world.provider.script = [Crash()]  # the process dies re-fetching the object
    with pytest.raises(Crash):
        await world.deliver(delivery)
    evt = event_id(world, delivery)
    # Stored by the first look, not applied: the provider delivers it again (never acked).
    assert (
        await world.scalar("SELECT applied FROM provider_events WHERE event_id = :e", e=evt)
        is False
    )
    assert (await world.payment(payment.id)).state is PaymentState.AUTHORIZED

    again = await world.deliver(delivery)
    assert again.applied and not again.duplicate
    done = await world.payment(payment.id)
    assert done.state is PaymentState.CAPTURED and done.captured_minor == 2500
    assert await world.scalar("SELECT applied FROM provider_events WHERE event_id = :e", e=evt)
    third = await world.deliver(delivery)
    assert third.duplicate and not third.applied
    captured = await world.scalar(
        "SELECT count(*) FROM outbox WHERE payment_id = :p AND type = 'payment.captured'",
        p=payment.id,
    )
    assert captured == 1


async def test_concurrent_deliveries_of_news_store_and_apply_it_once(world: World) -> None:
    payment = await world.authorized()
    delivery = world.delivery(payment, world.captured_at_provider(payment))
    outcomes = await asyncio.gather(*(world.deliver(delivery) for _ in range(6)))
    assert sorted((o.applied, o.duplicate) for o in outcomes) == [(False, True)] * 5 + [
        (True, False)
    ]
    done = await world.payment(payment.id)
    assert done.state is PaymentState.CAPTURED and done.captured_minor == 2500
    evt = event_id(world, delivery)
    assert (
        await world.scalar("SELECT count(*) FROM provider_events WHERE event_id = :e", e=evt) == 1
    )
    for sql in (
        "SELECT count(*) FROM outbox WHERE payment_id = :p AND type = 'payment.captured'",
        "SELECT count(*) FROM audit_log WHERE payment_id = :p AND action = 'webhook'",
    ):
        assert await world.scalar(sql, p=payment.id) == 1


async def test_an_event_the_payment_reflects_is_one_statement_stored_once(
    world: World, engine: AsyncEngine
) -> None:
    payment = await world.authorized()
    view = world.provider.intents[payment.provider_payment_id]  # as the request recorded it
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    first = world.delivery(payment, view)
    sa_event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        outcome = await world.deliver(first)
    finally:
        sa_event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert not outcome.applied and not outcome.duplicate
    assert len(statements) == 1, statements  # stored and the payment read together
    assert world.provider.calls[-1][0] == "authorize"  # no re-fetch

    concurrent = world.delivery(payment, view)
    outcomes = await asyncio.gather(*(world.deliver(concurrent) for _ in range(6)))
    assert sorted(o.duplicate for o in outcomes) == [False] + [True] * 5
    assert not any(o.applied for o in outcomes)
    evt = event_id(world, concurrent)
    assert (
        await world.scalar("SELECT count(*) FROM provider_events WHERE event_id = :e", e=evt) == 1
    )
    assert (await world.payment(payment.id)).state is PaymentState.AUTHORIZED


async def test_an_event_about_a_payment_not_recorded_yet_stores_nothing(world: World) -> None:
    payment = await world.authorized()
    unknown = replace(payment, id="pay_not_recorded_yet", provider_payment_id="pi_not_recorded")
    delivery = world.delivery(unknown, world.provider.intents[payment.provider_payment_id])
    with pytest.raises(errors.EventNotApplicableYet):
        await world.deliver(delivery)
    evt = event_id(world, delivery)
    assert (
        await world.scalar("SELECT count(*) FROM provider_events WHERE event_id = :e", e=evt) == 0
    )
