"""Background work of a sandbox: webhook deliveries and delayed state changes, each a tracked
asyncio task so that reset and shutdown can cancel them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("sandbox_kit")


class Background:
    """Tracked asyncio tasks; `call_later` runs a state change under the state lock."""

    def __init__(self, lock: asyncio.Lock) -> None:
        self._lock = lock
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def call_later(self, delay: float, change: Callable[[], None], name: str | None = None) -> None:
        """Run `change()` holding the state lock after `delay` seconds."""

        async def run() -> None:
            await asyncio.sleep(delay)
            async with self._lock:
                change()

        self.spawn(run(), name=name)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
