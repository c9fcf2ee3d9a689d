"""A webhook's first look reads its payment once, by key, with nothing to sort (issue 13).

Each card posting brings two Stripe webhooks, each stored by one statement that also finds the
payment the event is about: by the provider's id of the object, else by the id Hirepay put in its
metadata. That lookup was a UNION ALL of both reads ordered by rank, LIMIT 1: the payment read
twice (both keys name it) and both rows (its ~40 columns) sorted, on every delivery. It is now one
read of the payment by its primary key, the provider's id looked up first (a unique index): in the
generic plan no Sort and no Append, and the payment found by either key, the provider's first."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime

import pytest

from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.service_layer.ports import EventRecord
from tests.support.payments_helpers import card_payment
from tests.support.pg_plans import generic_plan, planning

_IDS = itertools.count(random.randrange(10**6, 10**9, 10**4))


def _record(object_id: str) -> EventRecord:
    now = datetime.now(UTC)
    return EventRecord(
        provider="stripe",
        event_id=f"evt_{next(_IDS)}",
        event_type="payment_intent.succeeded",
        object_id=object_id,
        payload={"id": object_id},
        provider_created_at=now,
        received_at=now,
    )


async def _paid(sessions, provider_payment_id: str) -> str:
    payment_id = f"pay_{next(_IDS)}"
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        await uow.payments.add(
            card_payment(payment_id, f"gtx_{next(_IDS)}", provider_payment_id=provider_payment_id)
        )
        await uow.commit()
    return payment_id


async def test_the_first_look_reads_the_payment_once_by_key(
    database_url, sessions, round_trips
) -> None:
    intent = f"pi_{next(_IDS)}"
    payment_id = await _paid(sessions, intent)
    round_trips.sent.clear()
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        look = await uow.events.store_first(_record(intent), by_checkout=False, ours=payment_id)
        await uow.commit()
    assert look.payment is not None and look.payment.id == payment_id and look.stored
    sql = next(
        sql
        for kind, sql in round_trips.sent
        if kind == "statement" and "INSERT INTO provider_events" in sql
    )
    async with planning(database_url) as connection:
        plan = await generic_plan(connection, sql)
    assert "Sort" not in plan and "Append" not in plan, plan
    assert "uq_payments_provider_payment_id" in plan and "payments_pkey" in plan, plan
    assert "Seq Scan" not in plan, plan


@pytest.mark.parametrize("by", ["provider", "ours", "provider first"])
async def test_the_payment_is_found_by_either_key_the_providers_first(sessions, by) -> None:
    intent = f"pi_{next(_IDS)}"
    payment_id = await _paid(sessions, intent)
    other = await _paid(sessions, f"pi_{next(_IDS)}")
    key, ours = {
        "provider": (intent, ""),
        "ours": (f"pi_unknown_{next(_IDS)}", payment_id),
        "provider first": (intent, other),  # the provider's id wins over a different `ours`
    }[by]
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        look = await uow.events.store_first(_record(key), by_checkout=False, ours=ours)
        await uow.commit()
    assert look.payment is not None and look.payment.id == payment_id


async def test_an_event_about_no_payment_finds_none_and_stores_nothing(sessions) -> None:
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        look = await uow.events.store_first(
            _record(f"pi_unknown_{next(_IDS)}"), by_checkout=False, ours=""
        )
        await uow.commit()
    assert look.payment is None and not look.stored
