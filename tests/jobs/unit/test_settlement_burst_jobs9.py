"""The settlement consumer takes events already read ahead without a task and a wait (issue 13),
and still stops when told to, whatever is waiting."""

from __future__ import annotations

import asyncio

import pytest

from jobs.entrypoints import workers
from tests.jobs.unit.test_settlement_cursor import _Stream
from tests.support.jobs_world import World


async def _read_ahead(count: int) -> tuple[World, workers._ReadAhead]:
    world = World()
    stream = _Stream()
    for cursor in range(1, count + 1):
        stream.send(cursor)
    ahead = workers._ReadAhead(stream)  # type: ignore[arg-type]
    for _ in range(count + 5):  # the pump reads them all ahead
        await asyncio.sleep(0)
    return world, ahead


async def test_events_waiting_are_a_burst_without_a_new_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world, ahead = await _read_ahead(3)
    stopper = asyncio.create_task(asyncio.Event().wait())
    position = workers._SettlementCursor(lambda: world.deps, 0)
    made: list[object] = []
    create_task = asyncio.create_task

    def counting(coro: object, **kwargs: object) -> asyncio.Task[object]:
        made.append(coro)
        return create_task(coro, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncio, "create_task", counting)
    try:
        burst = await ahead.next_burst(stopper, position)
    finally:
        monkeypatch.undo()
        stopper.cancel()
        ahead.close()
    assert [m.cursor for m in burst] == [1, 2, 3]
    assert made == []


async def test_a_stopped_consumer_takes_nothing_more_though_events_wait() -> None:
    world, ahead = await _read_ahead(2)
    stop = asyncio.Event()
    stop.set()
    stopper = asyncio.create_task(stop.wait())
    await asyncio.sleep(0)
    position = workers._SettlementCursor(lambda: world.deps, 0)
    try:
        assert stopper.done()
        burst = await ahead.next_burst(stopper, position)
    finally:
        ahead.close()
    # As before: with the stop and an event both ready, asyncio.wait may give either; what a
    # stopped consumer must never do is wait. It gets the events or nothing, at once.
    assert [m.cursor for m in burst] in ([], [1, 2])
