"""An asyncio event loop whose clock moves only when every task is waiting on a timer.

Code timed by asyncio's clock (`loop.time()`: `asyncio.sleep`, `asyncio.wait(timeout=...)`,
`asyncio.timeout`) then runs in virtual time: a test of a deadline measures what the code decides,
not how busy the machine is. When the loop would block in its selector until the next timer, the
clock jumps to that timer instead; real I/O (a thread handing a result back) still wakes it, but
a thread's work takes no virtual time: a timer due while it runs fires first."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


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
