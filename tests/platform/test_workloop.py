"""The workers' loop (hirepay_platform.workloop): rounds at the interval while the process is
busy, a pause that grows while it is idle, back to the interval on activity, prompt stop. In
virtual time: the intervals and pauses are the loop's decisions, whatever the machine's load."""

from __future__ import annotations

import asyncio
from typing import Any

from hirepay_platform import workloop
from tests.support.virtual_time import in_virtual_time

# (on the real clock, a thread holding the GIL in 50 ms slices failed 5 of these tests)
_virtual = in_virtual_time(workloop)


class Rounds:
    """A round that records when it ran and does the work it is told to."""

    def __init__(self) -> None:
        self.at: list[float] = []
        self.work: list[int] = []
        self.ran = asyncio.Event()

    async def __call__(self) -> int:
        self.at.append(asyncio.get_running_loop().time())
        self.ran.set()
        return self.work.pop(0) if self.work else 0

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.at, self.at[1:], strict=False)]


async def _run(rounds: Rounds, seconds: float, **options: Any) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(workloop.run_worker(rounds, stop, name="test", **options))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(task, 1)


@_virtual
async def test_an_idle_worker_pauses_longer_and_longer_up_to_its_idle_max() -> None:
    rounds = Rounds()
    await _run(rounds, 1.6, interval=0.05, idle_max=0.4)
    gaps = rounds.gaps()
    # 0.05, 0.1, 0.2, 0.4, 0.4, ...: far fewer rounds than one per interval.
    assert 4 <= len(rounds.at) <= 8, gaps
    assert gaps[0] < 0.1
    assert max(gaps) < 0.55
    assert gaps[-1] > 0.3


@_virtual
async def test_activity_brings_an_idle_worker_back_to_its_interval() -> None:
    rounds = Rounds()
    stop = asyncio.Event()
    task = asyncio.create_task(
        workloop.run_worker(rounds, stop, name="test", interval=0.05, idle_max=5.0)
    )
    await asyncio.sleep(1.0)  # backed off: the pause is now well above a second
    before = len(rounds.at)
    workloop.note_activity()  # e.g. an RPC was answered
    await asyncio.sleep(0.03)
    assert len(rounds.at) == before + 1  # the pause was cut short at once
    stop.set()
    await asyncio.wait_for(task, 1)


@_virtual
async def test_a_busy_process_does_not_wake_a_worker_pausing_for_its_interval() -> None:
    """Under load every answered RPC reports activity; a worker pausing for its interval (which
    activity cannot shorten) sleeps through it rather than being woken by each one (issue 13),
    and still runs a round per interval."""
    rounds = Rounds()
    stop = asyncio.Event()
    task = asyncio.create_task(
        workloop.run_worker(rounds, stop, name="test", interval=0.1, idle_max=5.0)
    )
    for _ in range(25):  # RPCs answered every 20 ms for half a second
        workloop.note_activity()
        await asyncio.sleep(0.02)
        assert not workloop._pausing  # no worker waits to be woken by an RPC
    stop.set()
    await asyncio.wait_for(task, 1)
    assert 4 <= len(rounds.at) <= 7, rounds.gaps()  # a round per interval, no more, no fewer


@_virtual
async def test_an_idle_worker_woken_by_activity_is_not_woken_again() -> None:
    rounds = Rounds()
    stop = asyncio.Event()
    task = asyncio.create_task(
        workloop.run_worker(rounds, stop, name="test", interval=0.3, idle_max=5.0)
    )
    while len(rounds.at) < 2:
        rounds.ran.clear()
        await rounds.ran.wait()
    # Its second pause (0.6 s) is an idle one: activity may cut it short (to 0.3 s from its start).
    await asyncio.sleep(0.05)
    assert workloop._pausing
    workloop.note_activity()
    await asyncio.sleep(0.02)
    assert not workloop._pausing  # woken once: the rest of its pause needs no wake-up
    assert len(rounds.at) == 2
    await asyncio.sleep(0.35)
    assert len(rounds.at) == 3  # the pause ended 0.3 s after it began
    stop.set()
    await asyncio.wait_for(task, 1)


@_virtual
async def test_rounds_that_work_follow_each_other_after_the_busy_pause() -> None:
    rounds = Rounds()
    rounds.work = [3, 2, 1]
    await _run(rounds, 0.3, interval=10.0, busy_pause=0.01)
    assert len(rounds.at) == 4  # three that worked, then one that found nothing
    assert max(rounds.gaps()) < 0.1


@_virtual
async def test_a_round_short_of_its_batch_waits_the_interval_not_the_busy_pause() -> None:
    """A round that took less than its batch left nothing behind: the next one comes after the
    interval, taking together what arrived meanwhile (issue 13); a full round goes on at once."""
    rounds = Rounds()
    rounds.work = [1, 1, 1]
    await _run(rounds, 0.5, interval=0.2, busy_pause=0.01, batch=10)
    assert 2 <= len(rounds.at) <= 3, rounds.gaps()
    assert min(rounds.gaps()) >= 0.19
    full = Rounds()
    full.work = [10, 10, 3]
    await _run(full, 0.3, interval=10.0, busy_pause=0.01, batch=10)
    assert len(full.at) == 3  # two full rounds at once, then one short of the batch
    assert max(full.gaps()) < 0.1


class Notices:
    """A wake-up like the payments process's: notify() sets the event the worker asked for."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def listen(self) -> asyncio.Event:
        return self.event

    def notify(self) -> None:
        self.event.set()
        self.event = asyncio.Event()


@_virtual
async def test_a_woken_worker_runs_at_once_but_at_most_once_per_interval() -> None:
    rounds = Rounds()
    notices = Notices()
    stop = asyncio.Event()
    task = asyncio.create_task(
        workloop.run_worker(
            rounds, stop, name="test", interval=0.3, idle_max=10.0, wake=notices.listen
        )
    )
    while len(rounds.at) < 3:  # backed off: rounds at 0, 0.3, 0.9; the next at 2.1
        rounds.ran.clear()
        await rounds.ran.wait()
    await asyncio.sleep(0.5)
    assert len(rounds.at) == 3, rounds.gaps()
    notices.notify()  # this process wrote work for it
    await asyncio.sleep(0.03)
    assert len(rounds.at) == 4  # at once, not at its next poll
    for _ in range(10):  # more work, written right after
        notices.notify()
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert len(rounds.at) == 4  # not before the interval since the last round began
    await asyncio.sleep(0.2)
    assert len(rounds.at) == 5  # one round for all of it
    assert rounds.gaps()[-1] >= 0.29
    stop.set()
    await asyncio.wait_for(task, 1)


@_virtual
async def test_work_written_during_a_round_wakes_the_pause_after_it() -> None:
    notices = Notices()
    at: list[float] = []

    async def round_() -> int:
        at.append(asyncio.get_running_loop().time())
        if len(at) == 3:
            notices.notify()  # written while the round runs, after it looked
        return 0

    stop = asyncio.Event()
    task = asyncio.create_task(
        workloop.run_worker(
            round_, stop, name="test", interval=0.1, idle_max=10.0, wake=notices.listen
        )
    )
    await asyncio.sleep(0.9)  # rounds at 0, 0.1, 0.3 (which is told), then 0.4, not 0.7
    stop.set()
    await asyncio.wait_for(task, 1)
    assert len(at) >= 4
    assert at[3] - at[2] < 0.2


@_virtual
async def test_a_worker_told_of_its_work_still_polls_for_the_rest() -> None:
    rounds = Rounds()
    notices = Notices()
    await _run(rounds, 0.5, interval=0.05, idle_max=0.2, wake=notices.listen)
    # No notice at all: it polls as any worker does (0.05, 0.1, 0.2, 0.2 ...).
    assert 4 <= len(rounds.at) <= 6, rounds.gaps()


@_virtual
async def test_a_failed_round_is_retried() -> None:
    calls = 0

    async def failing() -> int:
        nonlocal calls
        calls += 1
        raise RuntimeError("database down")

    stop = asyncio.Event()
    task = asyncio.create_task(
        workloop.run_worker(failing, stop, name="test", interval=0.02, idle_max=0.02)
    )
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(task, 1)
    assert calls >= 4


@_virtual
async def test_stop_ends_a_long_idle_pause_promptly() -> None:
    loop = asyncio.get_running_loop()
    rounds = Rounds()
    stop = asyncio.Event()
    task = asyncio.create_task(
        workloop.run_worker(rounds, stop, name="test", interval=30.0, idle_max=60.0)
    )
    await asyncio.sleep(0.05)
    stop.set()
    started = loop.time()
    await asyncio.wait_for(task, 1)
    assert loop.time() - started < 0.2


def test_the_default_idle_pause_scales_with_the_interval_and_is_capped() -> None:
    assert workloop.default_idle_max(0.3) == 0.3 * workloop.IDLE_FACTOR
    assert workloop.default_idle_max(1.0) == workloop.IDLE_MAX_SECONDS
    assert workloop.default_idle_max(30.0) == 30.0  # never below the interval
