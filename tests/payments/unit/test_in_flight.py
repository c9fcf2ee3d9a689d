"""The in-process record of provider work under way (a racing webhook waits for it) and of the
payments whose Try this process recorded (their Confirm needs no read), issue 13."""

from __future__ import annotations

import asyncio

import pytest

from hirepay_platform.tcc import TccBranch
from payments.domain.model import Payment, PaymentState
from payments.service_layer import in_flight as in_flight_module
from payments.service_layer.in_flight import InFlight
from tests.support.payments_helpers import card_payment
from tests.support.tasks import tasks_made


async def test_a_waiter_is_released_when_the_outermost_work_ends() -> None:
    in_flight = InFlight()
    assert not await in_flight.settled("pay_1", 1.0)  # nothing under way: no wait at all
    outer_done = asyncio.Event()

    async def work() -> None:
        with in_flight.working_on("pay_1"):
            with in_flight.working_on("pay_1"):  # e.g. a follow-up round of the same drive
                await asyncio.sleep(0.05)
            await outer_done.wait()

    task = asyncio.ensure_future(work())
    await asyncio.sleep(0.01)
    assert not await in_flight.settled("pay_1", 0.1)  # the inner end did not release it
    waiter = asyncio.ensure_future(in_flight.settled("pay_1", 5.0))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    outer_done.set()
    assert await waiter
    await task
    assert not await in_flight.settled("pay_1", 1.0)


async def test_work_that_fails_still_releases_its_waiters() -> None:
    in_flight = InFlight()

    async def failing() -> None:
        with in_flight.working_on("pay_2"):
            await asyncio.sleep(0.02)
            raise RuntimeError("provider call blew up")

    task = asyncio.ensure_future(failing())
    await asyncio.sleep(0)
    assert await in_flight.settled("pay_2", 5.0)
    (failed,) = await asyncio.gather(task, return_exceptions=True)
    assert isinstance(failed, RuntimeError)


def _payment(gtx: str) -> Payment:
    return card_payment(f"pay_{gtx}", gtx, state=PaymentState.AUTHORIZED, pending_op=None)


def test_a_recorded_payment_is_taken_once_as_it_was_committed() -> None:
    in_flight = InFlight()
    payment = _payment("gtx-kept")
    in_flight.recorded(payment)
    payment.metadata["changed"] = "after its commit"  # the caller's object, not the kept copy
    kept = in_flight.take_recorded(TccBranch("gtx-kept", "payment"))
    assert kept is not None and kept is not payment and kept.metadata == {"subsystem": "jobs"}
    assert in_flight.take_recorded(TccBranch("gtx-kept", "payment")) is None  # once
    assert in_flight.take_recorded(TccBranch("gtx-other", "payment")) is None


def test_recorded_payments_are_bounded_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(in_flight_module, "RECORDED_LIMIT", 3)
    in_flight = InFlight()
    for i in range(5):
        in_flight.recorded(_payment(f"gtx-{i}"))
    taken = [in_flight.take_recorded(TccBranch(f"gtx-{i}", "payment")) for i in range(5)]
    assert [p.id if p else None for p in taken] == [
        None,
        None,
        "pay_gtx-2",
        "pay_gtx-3",
        "pay_gtx-4",
    ]


async def test_a_raced_event_waits_in_its_own_task() -> None:
    """settled() waits in the caller's task: asyncio.wait_for ran the wait in a task of its own,
    one more task and its scheduling per raced webhook (issue 13)."""
    in_flight = InFlight()
    release = asyncio.Event()

    async def work() -> None:
        with in_flight.working_on("pay_own"):
            await release.wait()

    worker = asyncio.ensure_future(work())
    await asyncio.sleep(0)
    with tasks_made() as made:
        asyncio.get_running_loop().call_later(0.01, release.set)
        assert await in_flight.settled("pay_own", 5.0)
        assert not await in_flight.settled("pay_gone", 5.0)
        with in_flight.working_on("pay_slow"):
            assert not await in_flight.settled("pay_slow", 0.01)  # timed out: still going
    await worker
    assert made == []
