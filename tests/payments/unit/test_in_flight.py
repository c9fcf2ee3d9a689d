"""The in-process record of provider work under way (a racing webhook waits for it, issue 13)."""

from __future__ import annotations

import asyncio

from payments.service_layer.in_flight import InFlight


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
