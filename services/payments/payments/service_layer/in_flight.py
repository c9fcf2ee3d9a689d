"""The payments whose provider work this process is doing now, so that a webhook racing the
request whose call it reports waits for that request's answer instead of re-fetching the object
and locking the payment (issue 13).

The provider sends an event as it answers the call, so the event usually reaches Hirepay while the
request that made the call is still recording its answer: the payment then still looks pending,
and the event would cost a provider fetch, a row lock and an audit row only to find, under the
lock, that the request recorded the same thing. Waiting for the request turns it into the usual
already-recorded event (one stored row). Only a hint within one process: an event delivered to
another replica, or one whose wait times out, is applied as before; an answer the request lost
leaves the payment pending, so the event is then re-fetched and applied as before too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class InFlight:
    """Payment ids with provider work under way in this process, each with an event set once
    that work's outcome is recorded (or abandoned)."""

    def __init__(self) -> None:
        self._done: dict[str, asyncio.Event] = {}

    @contextlib.contextmanager
    def working_on(self, payment_id: str) -> Iterator[None]:
        """Mark the payment's provider work as under way for the block (nested marks: the
        outermost one ends it)."""
        if payment_id in self._done:
            yield
            return
        done = self._done[payment_id] = asyncio.Event()
        try:
            yield
        finally:
            del self._done[payment_id]
            done.set()

    async def settled(self, payment_id: str, timeout: float) -> bool:
        """Wait (at most `timeout` s) until the payment's provider work under way here is over;
        whether there was any and it ended (False: none here, or still going: act as usual)."""
        done = self._done.get(payment_id)
        if done is None:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout)
        return done.is_set()
