"""The settlement consumer waits for the next event on one future that the read-ahead or the
stop resolves, not on a new task raced against the stop by asyncio.wait (issue 13): fewer Python
calls per wait, and the same behaviour: a stop ends a wait at once, a quiet stream still records
the cursor, an event ends a wait with or without that timeout, at most BURST_EVENTS wait read
ahead."""

from __future__ import annotations

import asyncio
from typing import Any

from jobs.entrypoints import workers
from tests.jobs.unit.test_settlement_cursor import _Stream
from tests.support.jobs_world import World
from tests.support.python_calls import hooked

ROUNDS = 20


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def _calls_per_wait(behind: bool) -> float:
    """Python and built-in calls made by the consumer and the read-ahead (by a frame of
    workers.py or what it called) while the consumer waits on a quiet stream until one event arrives and takes it as
    its burst (no linger: its sleep is the same either way)."""
    world = World()
    stream = _Stream()
    ahead = workers._ReadAhead(stream)  # type: ignore[arg-type]
    stopper = asyncio.create_task(asyncio.Event().wait())
    position = workers._SettlementCursor(lambda: world.deps, 0)
    if behind:
        await position.applied(1)  # the cursor is behind: the wait has the quiet timeout
    await _settle()
    calls = 0

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event not in ("call", "c_call"):
            return
        while frame is not None:
            if frame.f_code.co_filename == workers.__file__:
                calls += 1  # made by the consumer or the read-ahead (not the loop, not the test)
                return
            frame = frame.f_back

    original = workers.BURST_LINGER_SECONDS
    workers.BURST_LINGER_SECONDS = 0
    try:
        for cursor in range(2, 2 + ROUNDS):
            with hooked(count):
                consumer = asyncio.create_task(ahead.next_burst(stopper, position))
                await _settle()  # the consumer waits
                stream.send(cursor)
                await _settle()
            burst = await consumer
            assert [m.cursor for m in burst] == [cursor]
    finally:
        workers.BURST_LINGER_SECONDS = original
        stopper.cancel()
        ahead.close()
    return calls / ROUNDS


async def test_a_wait_for_the_next_event_costs_few_calls() -> None:
    # (measured: 106 and 118 per wait with a task reading a queue and asyncio.wait; 50 and 64
    # with the one future)
    assert await _calls_per_wait(behind=False) <= 65
    assert await _calls_per_wait(behind=True) <= 80


async def test_a_stop_ends_a_wait_at_once() -> None:
    world = World()
    stream, stop = _Stream(), asyncio.Event()
    ahead = workers._ReadAhead(stream)  # type: ignore[arg-type]
    stopper = asyncio.create_task(stop.wait())
    position = workers._SettlementCursor(lambda: world.deps, 0)
    try:
        consumer = asyncio.create_task(ahead.next_burst(stopper, position))
        await _settle()
        assert not consumer.done()
        stop.set()
        assert await asyncio.wait_for(consumer, 1) == []
        # and a later call while stopped returns at once too
        assert await asyncio.wait_for(ahead.next_burst(stopper, position), 1) == []
    finally:
        stopper.cancel()
        ahead.close()


async def test_an_event_ends_a_quiet_wait_before_its_timeout_and_the_cursor_waits() -> None:
    world = World()
    stream = _Stream()
    ahead = workers._ReadAhead(stream)  # type: ignore[arg-type]
    stopper = asyncio.create_task(asyncio.Event().wait())
    position = workers._SettlementCursor(lambda: world.deps, 0)
    await position.applied(7)
    try:
        consumer = asyncio.create_task(ahead.next_burst(stopper, position))
        await _settle()
        stream.send(8)
        burst = await asyncio.wait_for(consumer, 1)
        assert [m.cursor for m in burst] == [8]
        assert world.store.cursors.get(workers.CONSUMER) is None  # not quiet: not recorded
        # quiet now: after the timeout the cursor is recorded, and the wait goes on
        consumer = asyncio.create_task(ahead.next_burst(stopper, position))
        await asyncio.sleep(workers.CURSOR_IDLE_SECONDS + 0.1)
        assert world.store.cursors[workers.CONSUMER] == 7
        assert not consumer.done()
        stream.send(9)
        assert [m.cursor for m in await asyncio.wait_for(consumer, 1)] == [9]
    finally:
        stopper.cancel()
        ahead.close()


async def test_at_most_a_burst_of_events_waits_read_ahead() -> None:
    world = World()
    stream = _Stream()
    for cursor in range(1, 2 * workers.BURST_EVENTS + 11):
        stream.send(cursor)
    ahead = workers._ReadAhead(stream)  # type: ignore[arg-type]
    stopper = asyncio.create_task(asyncio.Event().wait())
    position = workers._SettlementCursor(lambda: world.deps, 0)
    try:
        await _settle()
        # the rest is left unread (one more read waits for room)
        assert stream.queue.qsize() == workers.BURST_EVENTS + 9
        taken: list[int] = []
        while len(taken) < 2 * workers.BURST_EVENTS + 10:
            burst = await asyncio.wait_for(ahead.next_burst(stopper, position), 1)
            assert 1 <= len(burst) <= workers.BURST_EVENTS
            taken += [m.cursor for m in burst]
        assert taken == list(range(1, 2 * workers.BURST_EVENTS + 11))
    finally:
        stopper.cancel()
        ahead.close()
