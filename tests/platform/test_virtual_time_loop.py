"""The tests' virtual-time event loop: timers fire in order without waiting for real time."""

from __future__ import annotations

import asyncio
import time

from hirepay_dev import benchlib
from tests.support.virtual_time import in_virtual_time, run_in_virtual_time


def test_sleeps_and_timeouts_take_virtual_time_only() -> None:
    async def scenario() -> tuple[float, list[str], bool]:
        loop = asyncio.get_running_loop()
        order: list[str] = []

        async def sleeper(name: str, seconds: float) -> None:
            await asyncio.sleep(seconds)
            order.append(name)

        began = loop.time()
        await asyncio.gather(sleeper("b", 20.0), sleeper("a", 5.0), sleeper("c", 60.0))
        timed_out = False
        try:
            async with asyncio.timeout(30.0):
                await asyncio.sleep(3600.0)
        except TimeoutError:
            timed_out = True
        return loop.time() - began, order, timed_out

    real = time.monotonic()
    elapsed, order, timed_out = run_in_virtual_time(scenario())
    assert time.monotonic() - real < 5.0  # 90 virtual seconds, no real waiting
    assert order == ["a", "b", "c"]
    assert timed_out
    assert abs(elapsed - 90.0) < 1e-6


def test_real_io_from_a_thread_still_wakes_the_loop() -> None:
    async def scenario() -> str:
        return await asyncio.to_thread(lambda: (time.sleep(0.05), "done")[1])

    assert run_in_virtual_time(scenario()) == "done"


def test_a_clocked_module_reads_the_loops_clock_by_monotonic_and_perf_counter() -> None:
    seen: list[tuple[float, float, float]] = []

    @in_virtual_time(benchlib)
    async def scenario() -> None:
        await asyncio.sleep(30.0)
        clock = benchlib.time
        seen.append((clock.monotonic(), clock.perf_counter(), asyncio.get_running_loop().time()))

    scenario()
    assert seen == [(30.0, 30.0, 30.0)]
    assert benchlib.time is time  # the real clock back afterwards
