"""Under load a posting's settlement events reach the consumer while the request of this process
that drives its saga is still on its way to the completion: the consumer waits for that request
(bounded) and then judges the events as those of a posting completed here, instead of reading the
saga its request holds (issue 13; PAY-9 unchanged: an event still unknown is read as before)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from jobs.domain import commands
from jobs.domain.posting_saga import SagaState, SettlementEvent, TryResult, TryState
from jobs.service_layer.deps import Deps
from jobs.service_layer.handlers import pay_to_post, settlement
from jobs.service_layer.posting.finished import CompletedPostings
from tests.support.jobs_fakes import FakeSagas
from tests.support.jobs_world import COMPANY, FIELDS, World


def _event(cursor: int, state: TryState, saga_id: str) -> SettlementEvent:
    return SettlementEvent(
        f"ev{cursor}", cursor, f"payment.{state}", saga_id, "payment", TryResult(state, "pay_1")
    )


def _post(key: str) -> commands.CreateJobWithPayment:
    return commands.CreateJobWithPayment(
        request_id=key,
        actor=COMPANY,
        payment=commands.PaymentChoice(method="card", payment_method_token="pm_card_visa"),
        accept_terms=True,
        fingerprint=key,
        fields=FIELDS,
    )


def _deps(world: World, completed: CompletedPostings) -> Deps:
    return dataclasses.replace(world.deps, completed=completed)


async def _consume(events: list[SettlementEvent], deps: Deps) -> list[bool]:
    applying = settlement.apply_settlement_events(
        commands.ApplySettlementEvents(tuple(events)), deps
    )
    return [applied async for _, applied in applying]


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """The consumer's reads of sagas (each a statement in the service)."""
    made: list[tuple[str, ...]] = []
    get_many = FakeSagas.get_many

    async def counting(self: FakeSagas, saga_ids: list[str]) -> object:
        made.append(tuple(saga_ids))
        return await get_many(self, saga_ids)

    monkeypatch.setattr(FakeSagas, "get_many", counting)
    return made


async def test_events_of_a_posting_in_flight_here_wait_for_its_request_not_a_read(
    reads: list[tuple[str, ...]],
) -> None:
    world = World()
    completed = CompletedPostings()
    capture, at_capture = asyncio.Event(), asyncio.Event()
    confirm = world.payments.confirm

    async def slow_capture(saga: object) -> TryResult:
        at_capture.set()
        await capture.wait()  # the request is at its Capture when the events arrive
        return await confirm(saga)  # type: ignore[arg-type]

    world.payments.confirm = slow_capture  # type: ignore[method-assign]
    request = asyncio.create_task(
        pay_to_post.create_job_with_payment(_post("k1"), _deps(world, completed))
    )
    await at_capture.wait()
    saga_id = world.only_saga().id
    events = [_event(1, TryState.RESERVED, saga_id), _event(2, TryState.CAPTURED, saga_id)]
    consumer = asyncio.create_task(_consume(events, _deps(world, completed)))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not consumer.done()  # waiting for the request, not reading its saga
    assert reads == []
    capture.set()
    answer = await request
    assert answer.job.status == "active"
    assert await consumer == [False, False]  # nothing left to do: judged without a read
    assert reads == []
    assert world.only_saga().state is SagaState.COMPLETED


async def test_a_request_that_fails_lets_its_events_be_read(
    reads: list[tuple[str, ...]],
) -> None:
    world = World()
    completed = CompletedPostings()
    gate, at_capture = asyncio.Event(), asyncio.Event()

    async def failing_capture(saga: object) -> TryResult:
        at_capture.set()
        await gate.wait()
        raise RuntimeError("the request dies at its Capture")

    world.payments.confirm = failing_capture  # type: ignore[method-assign]
    request = asyncio.create_task(
        pay_to_post.create_job_with_payment(_post("k2"), _deps(world, completed))
    )
    await at_capture.wait()
    saga_id = world.only_saga().id
    consumer = asyncio.create_task(
        _consume([_event(2, TryState.CAPTURED, saga_id)], _deps(world, completed))
    )
    for _ in range(20):
        await asyncio.sleep(0)
    assert not consumer.done()
    gate.set()
    with pytest.raises(RuntimeError):
        await request
    await consumer  # not completed here: the consumer reads the saga as before
    assert reads == [(saga_id,)]


async def test_the_wait_is_bounded_and_only_for_requests_of_this_process() -> None:
    completed = CompletedPostings()
    loop = asyncio.get_running_loop()
    assert await completed.wait_for_requests([_event(1, TryState.CAPTURED, "saga_x")]) is False
    completed.driving("saga_1")
    began = loop.time()
    assert await completed.wait_for_requests([_event(1, TryState.CAPTURED, "saga_1")], 0.05)
    assert 0.04 <= loop.time() - began < 1.0  # gave up after its timeout
    waiting = asyncio.create_task(
        completed.wait_for_requests([_event(1, TryState.CAPTURED, "saga_1")], 10.0)
    )
    await asyncio.sleep(0)
    completed.done_driving("saga_1")
    assert await asyncio.wait_for(waiting, 1.0) is True
    assert await completed.wait_for_requests([_event(1, TryState.CAPTURED, "saga_1")]) is False
