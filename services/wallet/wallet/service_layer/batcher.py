"""Groups concurrent single calls (Transfer, ReserveHold, ConfirmHold) into batches, each one local
transaction, and answers every call only after its batch's transaction has committed (durable
before acknowledged)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from hirepay_platform.errors import HirepayError
from wallet.domain import commands
from wallet.service_layer.deps import Deps
from wallet.service_layer.handlers.batches import BatchOutcome, create_transfers
from wallet.service_layer.handlers.grouped_holds import confirm_holds, reserve_holds
from wallet.service_layer.handlers.holds import HoldResult
from wallet.service_layer.handlers.transfers import TransferResult
from wallet.service_layer.metrics import GROUPED_BATCH_SIZE

C = TypeVar("C")
R = TypeVar("R")
RunGroup = Callable[[Sequence[C], Deps], Awaitable[list[BatchOutcome[R]]]]


class GroupBatcher(Generic[C, R]):
    """Collects commands of one kind and runs them together with `run` (one transaction).

    When no batch is running, the calls that arrived in the same turn of the event loop go at once
    (a lone caller waits for nothing); while batches run, calls gather for up to `window_seconds` or
    `max_items`, and at most `max_in_flight` batches run at a time (each holds one connection).
    Each caller gets its own command's outcome: a refused command fails only its caller; a batch
    whose transaction failed (database down, repeated lost races) fails every caller in it, none of
    whose changes was committed.
    """

    def __init__(
        self,
        deps: Deps,
        run: RunGroup[C, R],
        *,
        name: str,
        max_items: int = 64,
        window_seconds: float = 0.001,
        max_in_flight: int = 1,
    ) -> None:
        if max_items < 1 or max_in_flight < 1:
            raise ValueError("max_items and max_in_flight must be at least 1")
        self._deps = deps
        self._max_items = max_items
        self._window = window_seconds
        self._max_in_flight = max_in_flight
        self._run = run
        self._batch_size = GROUPED_BATCH_SIZE.labels(name)
        self._queue: list[tuple[C, asyncio.Future[R]]] = []
        self._in_flight = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, cmd: C) -> R:
        """Run one command as part of a batch; returns (or raises) once its batch committed."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((cmd, future))
        if len(self._queue) >= self._max_items and self._in_flight < self._max_in_flight:
            self._flush()
        else:
            self._schedule()
        return await future

    def _schedule(self) -> None:
        if self._timer is not None or not self._queue or self._in_flight >= self._max_in_flight:
            return
        delay = 0.0 if self._in_flight == 0 else self._window
        self._timer = asyncio.get_running_loop().call_later(delay, self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # Callers whose call was cancelled (deadline) are left out: nobody waits for them.
        self._queue = [(cmd, f) for cmd, f in self._queue if not f.done()]
        if not self._queue or self._in_flight >= self._max_in_flight:
            return
        batch, self._queue = self._queue[: self._max_items], self._queue[self._max_items :]
        self._in_flight += 1
        self._batch_size.observe(len(batch))
        task = asyncio.get_running_loop().create_task(self._post(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, batch: list[tuple[C, asyncio.Future[R]]]) -> None:
        try:
            outcomes = await self._run([cmd for cmd, _ in batch], self._deps)
        except asyncio.CancelledError:  # shutting down: its callers are not answered either
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # the transaction failed: nothing of this batch was committed
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            _answer(batch, outcomes)
        finally:
            self._in_flight -= 1
            if len(self._queue) >= self._max_items:
                self._flush()
            else:
                self._schedule()


def _answer(batch: list[tuple[C, asyncio.Future[R]]], outcomes: list[BatchOutcome[R]]) -> None:
    """Each caller still waiting gets its own command's result or error (after the COMMIT)."""
    for (_, future), outcome in zip(batch, outcomes, strict=True):
        if future.done():
            continue
        if outcome.error is not None:
            future.set_exception(outcome.error)
        elif outcome.result is not None:
            future.set_result(outcome.result)


async def run_alone(run: RunGroup[C, R], cmd: C, deps: Deps) -> R:
    """One call run as a group of its own, at once (grouping off: nothing gathered, no limit on
    calls in flight): the outcome its call alone has, in a group's round trips - one statement
    that commits itself in the common case, instead of BEGIN + statements + COMMIT (issue 13)."""
    (outcome,) = await run([cmd], deps)
    if outcome.error is not None:
        raise outcome.error
    if outcome.result is None:  # every outcome has one or the other
        raise HirepayError("the call has no outcome", reason="INTERNAL")
    return outcome.result


async def transfer_alone(cmd: commands.Transfer, deps: Deps) -> TransferResult:
    return await run_alone(_transfers, cmd, deps)


async def _transfers(
    cmds: Sequence[commands.Transfer], deps: Deps
) -> list[BatchOutcome[TransferResult]]:
    return await create_transfers(commands.CreateTransfers(tuple(cmds)), deps)


class TransferBatcher(GroupBatcher[commands.Transfer, TransferResult]):
    """Concurrent Transfer calls posted together as one CreateTransfers batch."""

    def __init__(self, deps: Deps, **options: float) -> None:
        super().__init__(deps, _transfers, name="Transfer", **options)  # type: ignore[arg-type]

    async def transfer(self, cmd: commands.Transfer) -> TransferResult:
        return await self.call(cmd)


class HoldBatchers:
    """Concurrent ReserveHold calls run together, and so do concurrent ConfirmHold calls; each call
    keeps its own barrier row, its own result or error (grouped_holds)."""

    def __init__(self, deps: Deps, **options: float) -> None:
        self.reserve: GroupBatcher[commands.ReserveHold, HoldResult] = GroupBatcher(
            deps,
            reserve_holds,
            name="ReserveHold",
            **options,  # type: ignore[arg-type]
        )
        self.confirm: GroupBatcher[commands.ConfirmHold, HoldResult] = GroupBatcher(
            deps,
            confirm_holds,
            name="ConfirmHold",
            **options,  # type: ignore[arg-type]
        )
