"""The marketplace events outbox on real PostgreSQL: an event is written with its change or not
at all, recording the same change twice writes one event, and the notifier worker delivers each
event signed, once, to the configured subsystem."""

from __future__ import annotations

import asyncio

import pytest

from hirepay_platform.db import create_engine, make_session_factory
from hirepay_platform.notifier import CallbackSender
from jobs.adapters.unit_of_work import SqlJobsUnitOfWork
from jobs.domain.events import EventType, event_id_for
from jobs.domain.marketplace import FundingSource, Offer, OfferState
from jobs.entrypoints.workers import notifier_worker
from jobs.service_layer.deps import Deps
from jobs.service_layer.notifications import record_event
from tests.support.callback_receiver import CallbackReceiver
from tests.support.escrow_support import post_job
from tests.support.jobs_fakes import START, FakeParticipants, make_config
from tests.support.waiting import wait_for

SECRET = "jobs-callback-secret-for-tests"


@pytest.fixture
async def deps(make_service_database):
    url = await asyncio.to_thread(make_service_database, "jobs")
    engine = create_engine(url)
    sessions = make_session_factory(engine)
    yield Deps.build(lambda: SqlJobsUnitOfWork(sessions), make_config(), FakeParticipants())
    await engine.dispose()


async def test_an_event_is_recorded_once_per_change_and_only_with_it(deps: Deps) -> None:
    async with deps.uow as uow:
        assert await record_event(uow, EventType.OFFER_RECEIVED, "off_1", START, {"amount": 5})
        await uow.commit()
    async with deps.uow as uow:  # the same change again (a replay): nothing new
        assert not await record_event(uow, EventType.OFFER_RECEIVED, "off_1", START, {"x": 1})
        await uow.commit()
    async with deps.uow as uow:  # a change rolled back takes its event with it
        assert await record_event(uow, EventType.OFFER_ACCEPTED, "off_1", START)
    async with deps.uow as uow:
        events = await uow.outbox.for_subject("off_1")
    assert [(e.type, e.data) for e in events] == [(EventType.OFFER_RECEIVED, {"amount": 5})]
    assert events[0].event_id == event_id_for(EventType.OFFER_RECEIVED, "off_1")


async def test_the_notifier_delivers_signed_events_once_each(deps: Deps) -> None:
    receiver = CallbackReceiver(SECRET, fail_first=1)
    async with deps.uow as uow:
        for kind in (EventType.DISPUTE_OPENED, EventType.DISPUTE_RESOLVED):
            await record_event(uow, kind, "eng_1", START, {"engagementId": "eng_1"})
        await uow.commit()
    sender = CallbackSender({"marketplace": receiver.url}, SECRET, 5.0)
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(notifier_worker(lambda: deps.fresh(), sender, 0.05)(stop))
        for _ in range(2)
    ]  # two replicas
    try:

        async def both() -> bool:
            return len(receiver.bodies()) >= 2

        await wait_for(both, timeout=15)
        await asyncio.sleep(0.3)  # nothing more arrives
    finally:
        stop.set()
        await asyncio.gather(*workers)
        receiver.close()
    bodies = receiver.bodies()
    # The refused first delivery comes again after the other one: order is not promised.
    assert sorted(b["type"] for b in bodies) == ["dispute.opened", "dispute.resolved"]
    assert all(ok for _, ok in receiver.received)
    assert all(b["data"] == {"engagementId": "eng_1"} for b in bodies)
    assert receiver.idempotency_keys == [b["eventId"] for b in bodies]


async def test_offers_tell_each_change_once_in_the_transaction_of_the_change(deps: Deps) -> None:
    job_id = await post_job(deps, "cust_ev")
    offer = Offer(
        id="offer_ev1",
        job_id=job_id,
        customer_id="cust_ev",
        contractor_id="ctr_ev",
        amount_minor=100_000,
        unit="USD",
        funding=FundingSource.CARD,
        state=OfferState.RESERVING,
        saga_id="saga_ev1",
        request_id="rq-ev1",
        expires_at=START,
        created_at=START,
        updated_at=START,
    )
    async with deps.uow as uow:
        await uow.offers.add(offer)  # reserving: nothing to tell yet
        await uow.commit()
    for step in (
        lambda o: o.reserved("pay_ev1", START),
        lambda o: o.reserved("pay_ev1", START) if o.state is OfferState.RESERVING else None,
        lambda o: o.close(OfferState.REJECTED, "rejected_by_contractor", START),
    ):
        async with deps.uow as uow:
            current = await uow.offers.get(offer.id, for_update=True)
            assert current is not None
            step(current)
            await uow.offers.save(current)  # saved twice as pending: told once
            await uow.commit()
    async with deps.uow as uow:
        events = await uow.outbox.for_subject(offer.id)
    assert [e.type for e in events] == [EventType.OFFER_RECEIVED, EventType.OFFER_REJECTED]
    assert events[1].data["reason"] == "rejected_by_contractor"
    assert events[0].data["contractorId"] == "ctr_ev"
