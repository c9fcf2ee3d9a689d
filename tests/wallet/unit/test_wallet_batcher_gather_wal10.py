"""How long calls gather with more than one batch allowed in flight (issue 13): from the first
waiting call's arrival, for a batch's share of a batch's time (the running mean of batch times over
the batches allowed in flight), so that a batch beside a running one overlaps its COMMIT wait
without splitting the calls that come back together into a large and a tiny group.
No database: the group runner is a stand-in whose groups take a set time."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tests.support.virtual_time import in_virtual_time
from wallet.service_layer.batcher import GroupBatcher
from wallet.service_layer.handlers import BatchOutcome

# How long each stand-in group takes: long against the event loop's delays on a busy machine.
GROUP_SECONDS = 0.4


class SlowRunner:
    """Runs groups of ints (each answered with itself), each taking GROUP_SECONDS; records when
    each group started and how many ran at once."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.running = 0
        self.most_running = 0

    async def __call__(self, cmds: Sequence[int], deps: object) -> list[BatchOutcome[int]]:
        self.groups.append(list(cmds))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(GROUP_SECONDS)
            return [BatchOutcome(result=cmd) for cmd in cmds]
        finally:
            self.running -= 1


def _batcher(runner: SlowRunner, max_in_flight: int) -> GroupBatcher[int, int]:
    return GroupBatcher(
        None,  # type: ignore[arg-type]
        runner,  # type: ignore[arg-type]
        name="test",
        window_seconds=0.001,
        max_in_flight=max_in_flight,
    )


@in_virtual_time()
async def test_calls_gather_for_half_a_batch_time_beside_a_running_batch():
    runner = SlowRunner()
    batcher = _batcher(runner, max_in_flight=2)
    assert batcher.gather_seconds() == 0.001  # no batch has finished: the window
    assert await batcher.call(0) == 0  # alone: at once; it teaches the batcher a batch's time
    assert GROUP_SECONDS <= batcher.gather_seconds() * 2 < GROUP_SECONDS * 1.5
    first = asyncio.ensure_future(batcher.call(1))  # nothing running: goes at once
    await asyncio.sleep(0.02)
    later = [asyncio.ensure_future(batcher.call(i)) for i in range(2, 5)]
    # Well inside half a batch time from their arrival the calls wait, although the window has
    # passed and a second batch is allowed.
    await asyncio.sleep(GROUP_SECONDS / 4)
    assert runner.groups == [[0], [1]]
    # Past it, and before the first batch is done, they go together beside it.
    await asyncio.sleep(GROUP_SECONDS / 2)
    assert runner.groups == [[0], [1], [2, 3, 4]]
    assert not first.done()
    assert await asyncio.gather(first, *later) == [1, 2, 3, 4]
    assert runner.most_running == 2


@in_virtual_time()
async def test_with_one_batch_in_flight_calls_wait_for_the_running_batch():
    runner = SlowRunner()
    batcher = _batcher(runner, max_in_flight=1)
    assert await batcher.call(0) == 0
    assert batcher.gather_seconds() == 0.001  # no other batch may run beside one
    first = asyncio.ensure_future(batcher.call(1))
    await asyncio.sleep(0.02)
    later = [asyncio.ensure_future(batcher.call(i)) for i in range(2, 5)]
    await asyncio.sleep(GROUP_SECONDS * 3 / 4)
    assert runner.groups == [[0], [1]]
    assert await asyncio.gather(first, *later) == [1, 2, 3, 4]
    assert runner.groups == [[0], [1], [2, 3, 4]]
    assert runner.most_running == 1


@in_virtual_time()
async def test_a_full_group_goes_at_once_beside_a_running_batch():
    runner = SlowRunner()
    batcher: GroupBatcher[int, int] = GroupBatcher(
        None,  # type: ignore[arg-type]
        runner,  # type: ignore[arg-type]
        name="test",
        max_items=3,
        window_seconds=0.001,
        max_in_flight=2,
    )
    assert await batcher.call(0) == 0
    first = asyncio.ensure_future(batcher.call(1))
    await asyncio.sleep(0.02)
    later = [asyncio.ensure_future(batcher.call(i)) for i in range(2, 5)]
    await asyncio.sleep(0.02)  # max_items waiting: no gathering
    assert runner.groups == [[0], [1], [2, 3, 4]]
    assert await asyncio.gather(first, *later) == [1, 2, 3, 4]
