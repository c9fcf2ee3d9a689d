"""The loop of every background worker that polls the database for work (recovery, relays,
pollers): a round at the worker's interval while the process is busy, a growing pause while
rounds find nothing and no call comes in, back to the interval as soon as one does.

Most work a worker finds was put there by an RPC this process answered (a posting's saga, an
outbox row, a payment to resolve) or by another worker's round. The platform's server
interceptor reports each answered RPC as activity (`note_activity`), and so does each round that
did work; an idle worker then returns to its interval, so under load nothing waits longer than
before. With no activity, the pause doubles from the interval up to `idle_max`: an idle service
stops paying a database round trip per worker several times a second. Work that only becomes
due with time (a retry's backoff, an expired lease, a crashed replica's saga) is therefore found
at most `idle_max` later than its due time, a bound the caller chooses (`default_idle_max`).

A worker may also be told of the work its own process writes (`wake`: e.g. a capture that owes a
booking) and of how much one round takes (`batch`): it then runs when woken, at most once per
interval, and goes straight on only after a full round, so that under load a round takes all
that was written since the last one; the poll remains for everything else."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

# After a round that did work, the next one starts this soon: a backlog drains at once.
BUSY_PAUSE_SECONDS = 0.05
# An idle worker's pause grows to IDLE_FACTOR times its interval, at most IDLE_MAX_SECONDS (and
# never below the interval itself).
IDLE_FACTOR = 8.0
IDLE_MAX_SECONDS = 5.0

_last_activity = 0.0
# The wake-up of each worker pausing now, in whatever event loop it runs.
_pausing: set[asyncio.Event] = set()


def note_activity() -> None:
    """Work may have arrived (an RPC was answered, a round did work): pausing workers return to
    their interval. Cheap enough for every RPC: a clock read and a loop over the pausing
    workers."""
    global _last_activity
    _last_activity = time.monotonic()
    for wake in _pausing:
        wake.set()


def default_idle_max(interval: float) -> float:
    """How long an idle worker of this interval may pause: IDLE_FACTOR times interval, capped at
    IDLE_MAX_SECONDS, never below the interval."""
    return max(interval, min(interval * IDLE_FACTOR, IDLE_MAX_SECONDS))


class IdlePause:
    """The pause between two rounds of one polling loop (see the module's docstring)."""

    def __init__(
        self,
        interval: float,
        *,
        idle_max: float | None = None,
        busy_pause: float = BUSY_PAUSE_SECONDS,
    ) -> None:
        self.interval = interval
        self.longest = max(interval, default_idle_max(interval) if idle_max is None else idle_max)
        self.busy_pause = busy_pause
        self._pause = interval

    async def after(
        self,
        worked: int,
        began: float,
        stopping: asyncio.Future[object] | None = None,
        *,
        backlog: bool = True,
    ) -> None:
        """Pause after a round that began at `began` (time.monotonic()) and did `worked` work;
        returns early when `stopping` completes.

        Did work: `busy_pause` if it may have left a `backlog`, else `interval`. Empty:
        `interval` if there was activity since the round began, else the idle pause (doubling up
        to `longest` with each empty round), cut short to `interval` from now by activity."""
        if worked:
            note_activity()
            self._pause = self.interval
            pause = self.busy_pause if backlog else self.interval
            await _wait(pause, began, pause, stopping)
            return
        woken = await _wait(self._pause, began, self.interval, stopping)
        self._pause = self.interval if woken else min(self._pause * 2, self.longest)


async def run_worker(
    round_: Callable[[], Awaitable[int]],
    stop: asyncio.Event,
    *,
    name: str,
    interval: float,
    idle_max: float | None = None,
    busy_pause: float = BUSY_PAUSE_SECONDS,
    batch: int | None = None,
    wake: Callable[[], asyncio.Event] | None = None,
) -> None:
    """Run `round_` (returns how much work it did) until `stop` is set, pausing between rounds
    as IdlePause does; a failed round is logged and counts as empty.

    `batch`: the most one round takes. A round that did less left nothing behind, so the next
    one comes after `interval`, not after the busy pause: what is written meanwhile is taken
    together (issue 13: under a steady low load the payments' booking worker ran a round, a
    wallet call and a commit for every posting, each round finding the one booking written
    during the busy pause before it).

    `wake`: the event this process sets when it writes work for the worker (asked for before
    each round, so work written during a round is not missed). The worker then runs at once,
    though not sooner than `interval` after its last round began (under load one round takes
    everything written in an interval). The pause still polls: it finds what was written
    elsewhere (another replica, a process that died, a retry that became due)."""
    pause = IdlePause(interval, idle_max=idle_max, busy_pause=busy_pause)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            began = time.monotonic()
            woken = wake() if wake is not None else None
            worked = 0
            try:
                worked = await round_()
            except Exception:
                log.exception("%s: round failed; the next one retries", name)
            backlog = batch is None or worked >= batch
            paused = pause.after(worked, began, stopping, backlog=backlog)
            if woken is None or (worked and backlog):
                await paused  # a backlog goes on after the busy pause whatever wakes it
            elif await _paused_or_woken(paused, woken):
                remaining = began + interval - time.monotonic()
                if remaining > 0 and not stopping.done():
                    await asyncio.wait({stopping}, timeout=remaining)
    finally:
        stopping.cancel()


async def _paused_or_woken(paused: Coroutine[Any, Any, None], woken: asyncio.Event) -> bool:
    """Run the pause until it ends or `woken` is set; whether `woken` cut it short."""
    if woken.is_set():
        paused.close()
        return True
    pausing = asyncio.ensure_future(paused)
    waking = asyncio.ensure_future(woken.wait())
    try:
        done, _ = await asyncio.wait({pausing, waking}, return_when=asyncio.FIRST_COMPLETED)
        return pausing not in done
    finally:
        pausing.cancel()
        waking.cancel()


async def _wait(
    pause: float, began: float, busy: float, stopping: asyncio.Future[object] | None
) -> bool:
    """Wait `pause` from now, or only `busy` from now once activity newer than `began` is seen
    (at once if that is already past); True if activity was seen.

    Only a wait that activity can still cut short listens for it (an idle pause longer than
    `busy`, with no activity seen yet). Under load a worker pauses for its interval (or its busy
    pause), which activity cannot shorten: it then simply sleeps, rather than being woken, to
    find nothing changed, by every RPC the process answers (three workers of the payments
    process woke about four times per posting each: issue 13)."""
    start = time.monotonic()
    shortest = min(pause, busy)
    if shortest < pause and _last_activity < began:
        wake = asyncio.Event()
        _pausing.add(wake)
        try:
            while _last_activity < began:
                remaining = start + pause - time.monotonic()
                if remaining <= 0 or (stopping is not None and stopping.done()):
                    return False
                wake.clear()
                waiter = asyncio.ensure_future(wake.wait())
                try:
                    await asyncio.wait(
                        {waiter} if stopping is None else {stopping, waiter},
                        timeout=remaining,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    waiter.cancel()
        finally:
            _pausing.discard(wake)
    # From here on activity changes nothing: it was seen, or the pause is no longer than `busy`.
    woken = _last_activity >= began
    remaining = start + (shortest if woken else pause) - time.monotonic()
    if remaining > 0:
        if stopping is None:
            await asyncio.sleep(remaining)
        elif not stopping.done():
            await asyncio.wait({stopping}, timeout=remaining)
    return woken or _last_activity >= began
