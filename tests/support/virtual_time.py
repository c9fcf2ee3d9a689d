"""An asyncio event loop whose clock moves only when every task is waiting on a timer.

Code timed by asyncio's clock (`loop.time()`: `asyncio.sleep`, `asyncio.wait(timeout=...)`,
`asyncio.timeout`) then runs in virtual time: a test of a deadline measures what the code decides,
not how busy the machine is. When the loop would block in its selector until the next timer, the
clock jumps to that timer instead; real I/O (a thread handing a result back) still wakes it, but
a thread's work takes no virtual time: a timer due while it runs fires first."""

from __future__ import annotations

import asyncio
import functools
import selectors
import time
from collections.abc import Callable, Coroutine
from types import ModuleType, SimpleNamespace
from typing import Any, ParamSpec, TypeVar

from hirepay_platform import workloop

T = TypeVar("T")
P = ParamSpec("P")


class _JumpingSelector(selectors.DefaultSelector):
    """The loop's selector: when nothing is ready now, the wait for a timer is skipped and the
    clock moved on by it."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout is None or timeout <= 0:
            return ready if ready or timeout == 0 else super().select(timeout)
        self.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop on a virtual clock that starts at 0."""

    def __init__(self) -> None:
        self._jumping = _JumpingSelector()
        super().__init__(self._jumping)

    def time(self) -> float:
        return self._jumping.now


def run_in_virtual_time(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to its end on a new virtual-time loop (closed afterwards)."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def in_virtual_time(
    *clocked: ModuleType,
) -> Callable[[Callable[P, Coroutine[Any, Any, None]]], Callable[P, None]]:
    """A decorator: the async test (its fixtures as they are) run on a virtual-time loop, with
    `clocked` (modules that time what they wait for by `time.monotonic()` or
    `time.perf_counter()`, e.g. the platform's worker loop, the bench's closed loop) reading the
    loop's clock instead: the rounds and pauses are what the code decides, not how busy the
    machine is. The worker loop clocked so has noted no activity yet (its last, on the real
    clock, would be in the virtual future)."""

    def decorate(test: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
        @functools.wraps(test)
        def run(*args: P.args, **kwargs: P.kwargs) -> None:
            saved = [module.time for module in clocked], workloop._last_activity

            async def scenario() -> None:
                now = asyncio.get_running_loop().time
                clock = {"monotonic": now, "perf_counter": now}
                for module in clocked:
                    module.time = SimpleNamespace(**{**vars(time), **clock})
                if workloop in clocked:
                    workloop._last_activity = float("-inf")
                await test(*args, **kwargs)

            try:
                run_in_virtual_time(scenario())
            finally:
                for module, real in zip(clocked, saved[0], strict=True):
                    module.time = real
                workloop._last_activity = saved[1]

        return run

    return decorate
