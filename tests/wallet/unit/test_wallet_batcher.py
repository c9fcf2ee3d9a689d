"""The batcher's grouping policy (no database: the group runner is a stand-in that records groups)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from wallet.entrypoints.main import wallet_config
from wallet.entrypoints.settings import WalletSettings
from wallet.service_layer.batcher import GroupBatcher
from wallet.service_layer.handlers import BatchOutcome


class Runner:
    """Runs groups of ints (each answered with itself); the first group waits for `release`."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.running = 0
        self.most_running = 0
        self.release = asyncio.Event()

    async def __call__(self, cmds: Sequence[int], deps: object) -> list[BatchOutcome[int]]:
        self.groups.append(list(cmds))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if len(self.groups) == 1:
                await self.release.wait()
            return [BatchOutcome(result=cmd) for cmd in cmds]
        finally:
            self.running -= 1


async def test_calls_arriving_while_a_group_runs_go_together_next_one_group_at_a_time():
    # One group in flight by default (issue 13): the calls that arrive while it runs go together
    # next.
    runner = Runner()
    batcher: GroupBatcher[int, int] = GroupBatcher(
        None,  # type: ignore[arg-type]
        runner,  # type: ignore[arg-type]
        name="test",
        window_seconds=0.001,
    )
    first = asyncio.ensure_future(batcher.call(0))
    await asyncio.sleep(0.01)  # the lone call goes at once
    later = [asyncio.ensure_future(batcher.call(i)) for i in range(1, 6)]
    await asyncio.sleep(0.05)  # many windows pass while the first group runs
    assert runner.groups == [[0]]
    runner.release.set()
    assert await asyncio.gather(first, *later) == [0, 1, 2, 3, 4, 5]
    assert runner.groups == [[0], [1, 2, 3, 4, 5]]
    assert runner.most_running == 1


async def test_more_groups_in_flight_when_configured():
    runner = Runner()
    batcher: GroupBatcher[int, int] = GroupBatcher(
        None,  # type: ignore[arg-type]
        runner,  # type: ignore[arg-type]
        name="test",
        window_seconds=0.001,
        max_in_flight=2,
    )
    first = asyncio.ensure_future(batcher.call(0))
    await asyncio.sleep(0.01)
    later = [asyncio.ensure_future(batcher.call(i)) for i in range(1, 6)]
    assert await asyncio.gather(*later) == [1, 2, 3, 4, 5]  # beside the first, still running
    runner.release.set()
    assert await first == 0
    assert runner.groups == [[0], [1, 2, 3, 4, 5]]
    assert runner.most_running == 2


def test_the_wallet_runs_one_group_at_a_time_by_default():
    # Two overlap a batch's COMMIT wait, calls gathering for half a batch's time meanwhile
    # (test_wallet_batcher_gather_wal10.py), not yet measured apart from one (issue 13).
    settings = WalletSettings(database_url="postgresql+asyncpg://u@localhost/wallet")
    assert settings.transfer_batches_in_flight == 1
    assert wallet_config(settings).transfer_batches_in_flight == 1
