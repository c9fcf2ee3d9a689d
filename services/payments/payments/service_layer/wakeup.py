"""An in-process wake-up: a commit that wrote work tells the loops waiting for it at once, so they
can poll rarely when idle (issue 13). Only a hint: waiters still poll, which covers work written
by another process or replica."""

from __future__ import annotations

import asyncio


class Wakeup:
    """`notify()` wakes every current `wait()`; a wait started after it waits for the next one."""

    def __init__(self) -> None:
        # The event the next notify() sets, made when someone first asks for it (listen, wait):
        # a notify that nobody listens for makes and sets nothing. Commits notify far more
        # often than the stream and the booking worker listen under load (issue 13: an
        # asyncio.Event made and set per commit that wrote an outbox row or a grant).
        self._event: asyncio.Event | None = None

    def notify(self) -> None:
        # Set the event the current listeners hold; a later listen() gets a fresh one.
        event = self._event
        if event is not None:
            self._event = None
            event.set()

    def listen(self) -> asyncio.Event:
        """The event the next `notify()` sets (a worker asks before its round: work written
        during the round then wakes its pause)."""
        event = self._event
        if event is None:
            event = self._event = asyncio.Event()
        return event

    async def wait(self, timeout: float) -> bool:
        """Wait for a notification, at most `timeout` seconds; whether one came."""
        event = self._event
        if event is None:
            event = self._event = asyncio.Event()
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
