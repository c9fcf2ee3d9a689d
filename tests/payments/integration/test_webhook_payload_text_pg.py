"""A webhook's payload stored as the JSON text it was received as (issue 13): the provider_events
row holds the delivery's own JSON (PostgreSQL parses it), not the parsed body serialized again, on
both ways an event is stored (the first look of an event that tells nothing new, the claim of one
that is applied); an event whose text is not known is stored from its parsed body as before."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hirepay_platform.db import make_session_factory
from payments.adapters.tables import JsonbOrText, JsonText
from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain import commands
from payments.domain.model import Payment, PaymentState
from payments.domain.provider import EventSubject, ProviderEvent, ProviderPayment, ProviderStatus
from payments.service_layer import handlers
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers.webhooks import handle_provider_event
from payments.service_layer.in_flight import InFlight
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import FakeProvider
from tests.support.payments_helpers import authorize_command

_IDS = itertools.count(random.randrange(10**6, 10**9, 10**4))
# More digits than a float keeps: only the received text stores them all.
EXACT = "1.00000000000000000001"


class EventProvider(FakeProvider):
    def __init__(self) -> None:
        super().__init__()
        self._ids = _IDS
        self.events: dict[bytes, ProviderEvent] = {}

    async def verify_event(self, payload: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        return self.events[payload]


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_session_factory(engine)


@pytest.fixture
def provider() -> EventProvider:
    return EventProvider()


def _deps(sessions: async_sessionmaker[AsyncSession], provider: EventProvider) -> Deps:
    return Deps(
        SqlPaymentsUnitOfWork(sessions),
        ProviderRegistry([provider]),
        Policy(provider_timeout=1, poll_base=1, poll_max=4),
        in_flight=InFlight(),
    )


async def _authorized(deps: Deps) -> Payment:
    gtx = f"gtx-{next(_IDS)}"
    payment = (await handlers.authorize(authorize_command(gtx), deps)).payment
    assert payment is not None and payment.state is PaymentState.AUTHORIZED
    return payment


def _delivery(
    provider: EventProvider, payment: Payment, view: ProviderPayment, *, with_text: bool
) -> tuple[str, commands.ProviderEventDelivery]:
    event_id = f"evt_{next(_IDS)}"
    raw = f'{{"id": "{event_id}", "x": {EXACT}}}'
    provider.events[raw.encode()] = ProviderEvent(
        id=event_id,
        type="payment_intent.succeeded",
        created=datetime.now(UTC),
        subject=EventSubject.PAYMENT,
        object_id=payment.provider_payment_id,
        metadata={"hirepay_payment_id": payment.id},
        view=view,
        body=json.loads(raw),
        body_text=raw if with_text else "",
    )
    return event_id, commands.ProviderEventDelivery(provider="stripe", payload=raw.encode())


async def _stored_x(sessions: async_sessionmaker[AsyncSession], event_id: str) -> Any:
    async with sessions() as session:
        return await session.scalar(
            text("SELECT payload->>'x' FROM provider_events WHERE event_id = :e"), {"e": event_id}
        )


async def test_an_event_that_tells_nothing_new_is_stored_as_received(
    sessions: async_sessionmaker[AsyncSession], provider: EventProvider
) -> None:
    deps = _deps(sessions, provider)
    payment = await _authorized(deps)
    view = provider.intents[payment.provider_payment_id]  # as the request recorded it
    event_id, delivery = _delivery(provider, payment, view, with_text=True)
    outcome = await handle_provider_event(delivery, _deps(sessions, provider))
    assert not outcome.applied and not outcome.duplicate
    assert await _stored_x(sessions, event_id) == EXACT


async def test_an_event_applied_is_stored_as_received(
    sessions: async_sessionmaker[AsyncSession], provider: EventProvider
) -> None:
    deps = _deps(sessions, provider)
    payment = await _authorized(deps)
    captured = replace(
        provider.intents[payment.provider_payment_id],
        status=ProviderStatus.CAPTURED,
        amount_capturable=0,
        amount_received=2500,
    )
    provider.intents[captured.id] = captured  # captured at the provider behind Hirepay's back
    event_id, delivery = _delivery(provider, payment, captured, with_text=True)
    outcome = await handle_provider_event(delivery, _deps(sessions, provider))
    assert outcome.applied
    assert await _stored_x(sessions, event_id) == EXACT


async def test_an_event_without_its_text_is_stored_from_its_body(
    sessions: async_sessionmaker[AsyncSession], provider: EventProvider
) -> None:
    deps = _deps(sessions, provider)
    payment = await _authorized(deps)
    view = provider.intents[payment.provider_payment_id]
    event_id, delivery = _delivery(provider, payment, view, with_text=False)
    await handle_provider_event(delivery, _deps(sessions, provider))
    assert await _stored_x(sessions, event_id) == str(float(EXACT))


def test_only_json_text_is_bound_as_it_is(engine: AsyncEngine) -> None:
    process = JsonbOrText().dialect_impl(engine.dialect).bind_processor(engine.dialect)
    assert process(JsonText('{"a": 1}')) == '{"a": 1}'
    assert type(process(JsonText("{}"))) is str
    assert json.loads(process({"a": 1})) == {"a": 1}
    assert json.loads(process("a text")) == "a text"  # a plain str is a JSON string value
