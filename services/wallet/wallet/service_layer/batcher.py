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
from wallet.service_layer.metrics import batch_size_observer

C = TypeVar("C")
R = TypeVar("R")
RunGroup = Callable[[Sequence[C], Deps], Awaitable[list[BatchOutcome[R]]]]


class GroupBatcher(Generic[C, R]):
    """Collects commands of one kind and runs them together with `run` (one transaction).

    When no batch is running, the calls that arrived in the same turn of the event loop go at once
    (a lone caller waits for nothing). While batches run, at most `max_in_flight` at a time (each
    holds one connection), the calls gather until `max_items` of them wait, or from the first
    one's arrival for `window_seconds` - with more than one batch allowed in flight, at least for
    a batch's share of a batch's time (the running mean of how long batches took, divided by
    `max_in_flight`). A batch's time is mostly the wait for its COMMIT's WAL flush (2-3 ms on the
    bench machine's disk), in which the wallet and PostgreSQL have nothing to do for it: a batch
    beside it overlaps that wait, and gathering for a share of it keeps the calls that come back
    together (the answers of one batch) in one group instead of splitting them into a large and
    a tiny one (issue 13).
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
        self._batch_size = batch_size_observer(name)
        self._queue: list[tuple[C, asyncio.Future[R]]] = []
        self._in_flight = 0
        # When the first call now waiting arrived (the event loop's clock), and the running mean
        # of how long a batch takes (None until one has finished).
        self._gather_start = 0.0
        self._mean_seconds: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, cmd: C) -> R:
        """Run one command as part of a batch; returns (or raises) once its batch committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if not self._queue:
            self._gather_start = loop.time()
        self._queue.append((cmd, future))
        if len(self._queue) >= self._max_items and self._in_flight < self._max_in_flight:
            self._flush()
        elif self._timer is None:  # (`_schedule`'s first test: no call while one is set)
            self._schedule()
        return await future

    def _schedule(self) -> None:
        if self._timer is not None or not self._queue or self._in_flight >= self._max_in_flight:
            return
        loop = asyncio.get_running_loop()
        delay = 0.0
        if self._in_flight:
            delay = max(0.0, self.gather_seconds() - (loop.time() - self._gather_start))
        self._timer = loop.call_later(delay, self._flush)

    def gather_seconds(self) -> float:
        """How long calls gather, from the first one's arrival, while batches run: the window, or
        with more than one batch allowed in flight the larger of it and a batch's share of a
        batch's time (the running mean over `max_in_flight`)."""
        if self._mean_seconds is None or self._max_in_flight == 1:
            return self._window
        return max(self._window, self._mean_seconds / self._max_in_flight)

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
        self._batch_size(len(batch))
        loop = asyncio.get_running_loop()
        self._gather_start = loop.time()  # of the calls left waiting, if any (max_items)
        task = loop.create_task(self._post(batch, self._gather_start))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, batch: list[tuple[C, asyncio.Future[R]]], started: float) -> None:
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
            self._note_duration(asyncio.get_running_loop().time() - started)
            if len(self._queue) >= self._max_items:
                self._flush()
            else:
                self._schedule()

    def _note_duration(self, seconds: float) -> None:
        """The running mean of batch times (exponentially weighted: a fifth for the newest)."""
        mean = self._mean_seconds
        self._mean_seconds = seconds if mean is None else mean + (seconds - mean) * _WEIGHT


# The weight of the newest batch's time in the running mean (the gathering follows the load).
_WEIGHT = 0.2


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
