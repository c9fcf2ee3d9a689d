"""The settlement consumer records its cursor once per run of events (issue 13): when the stream
goes quiet, every CURSOR_EVERY_EVENTS events, and when it stops; never per event."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from hirepay.payments.v1 import payments_service_pb2 as ppb
from jobs.entrypoints import workers
from tests.support.jobs_world import World


class _Stream:
    """A settlement stream whose events the test releases."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue()

    async def read(self) -> object:
        return await self.queue.get()

    def send(self, cursor: int) -> None:
        self.queue.put_nowait(ppb.SettlementEvent(event_id=f"e{cursor}", cursor=cursor))


async def _drain(world: World, stream: _Stream, stop: asyncio.Event) -> None:
    position = workers._SettlementCursor(lambda: world.deps, 0)
    stopper = asyncio.create_task(stop.wait())
    ahead = workers._ReadAhead(stream)  # type: ignore[arg-type]
    try:
        while burst := await ahead.next_burst(stopper, position):
            for message in burst:
                await position.applied(message.cursor)
    finally:
        stopper.cancel()
        ahead.close()
        await position.record()


async def test_the_cursor_is_recorded_when_the_stream_is_quiet_or_stops() -> None:
    world = World()
    stream, stop = _Stream(), asyncio.Event()
    consumer = asyncio.create_task(_drain(world, stream, stop))
    for cursor in (3, 5, 8):
        stream.send(cursor)
    await asyncio.sleep(0.05)
    assert world.store.cursors.get(workers.CONSUMER) is None  # not per event
    await asyncio.sleep(workers.CURSOR_IDLE_SECONDS + 0.1)
    assert world.store.cursors[workers.CONSUMER] == 8
    for cursor in range(9, 9 + workers.CURSOR_EVERY_EVENTS):
        stream.send(cursor)
    await asyncio.sleep(0.05)
    assert world.store.cursors[workers.CONSUMER] == 8 + workers.CURSOR_EVERY_EVENTS
    stream.send(500)
    await asyncio.sleep(0.01)
    stop.set()
    await consumer
    assert world.store.cursors[workers.CONSUMER] == 500


async def test_the_stream_ending_ends_the_consumer() -> None:
    world = World()
    stream, stop = _Stream(), asyncio.Event()
    stream.send(4)
    stream.queue.put_nowait(grpc.aio.EOF)
    await _drain(world, stream, stop)
    assert world.store.cursors[workers.CONSUMER] == 4


async def test_the_events_read_ahead_come_as_one_burst_and_an_error_after_them() -> None:
    """The events that arrived while the consumer was busy are its next burst (at most
    BURST_EVENTS); an error that broke the stream is raised once the events before it are taken."""
    world = World()
    stream, stop = _Stream(), asyncio.Event()
    for cursor in range(1, workers.BURST_EVENTS + 6):
        stream.send(cursor)
    stream.queue.put_nowait(RuntimeError("stream broken"))
    stopper = asyncio.create_task(stop.wait())
    ahead = workers._ReadAhead(stream)  # type: ignore[arg-type]
    position = workers._SettlementCursor(lambda: world.deps, 0)
    try:
        first = await ahead.next_burst(stopper, position)
        second = await ahead.next_burst(stopper, position)
        with pytest.raises(RuntimeError):
            await ahead.next_burst(stopper, position)
    finally:
        stopper.cancel()
        ahead.close()
    assert [m.cursor for m in first] == list(range(1, workers.BURST_EVENTS + 1))
    assert [m.cursor for m in second] == list(
        range(workers.BURST_EVENTS + 1, workers.BURST_EVENTS + 6)
    )
