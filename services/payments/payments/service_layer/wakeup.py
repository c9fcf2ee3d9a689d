"""An in-process wake-up: a commit that wrote work tells the loops waiting for it at once, so they
can poll rarely when idle (issue 13). Only a hint: waiters still poll, which covers work written
by another process or replica."""

from __future__ import annotations

import asyncio


class Wakeup:
    """`notify()` wakes every current `wait()`; a wait started after it waits for the next one."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        # Set the event the current waiters hold, then hand out a fresh one for later waits.
        self._event.set()
        self._event = asyncio.Event()

    def listen(self) -> asyncio.Event:
        """The event the next `notify()` sets (a worker asks before its round: work written
        during the round then wakes its pause)."""
        return self._event

    async def wait(self, timeout: float) -> bool:
        """Wait for a notification, at most `timeout` seconds; whether one came."""
        event = self._event
        # In the caller's own task: asyncio.wait_for (Python 3.11) runs the awaited coroutine in
        # a task of its own, one more task per wait of the settlement stream (issue 13). The
        # timeout caught by try, not contextlib.suppress (its __init__, __enter__ and __exit__
        # were three Python calls per wait).
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            pass
        return event.is_set()
