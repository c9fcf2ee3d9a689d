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

It also keeps each payment whose authorization this process just recorded, as committed, for its
Confirm: a first Capture then needs no read of the payment (issue 13). Only a hint too: the
Capture's guarded statement writes only if the row still holds every value of that copy (as it
does for a copy it read), so a payment changed since (a Void, a webhook, another replica) sends
the Capture the locked way as a race always did; a Capture on another replica reads as before.
"""

from __future__ import annotations

import asyncio

from hirepay_platform.tcc import TccBranch
from payments.domain.model import Payment

# Authorized payments kept for their Confirm at most (the oldest goes first): a Confirm follows
# its Try within moments, and one that comes later reads the payment as before.
RECORDED_LIMIT = 4096


class InFlight:
    """Payment ids with provider work under way in this process, each with an event set once
    that work's outcome is recorded (or abandoned)."""

    def __init__(self) -> None:
        # Each payment with work under way, with the event its waiters hold: made by the first
        # settled() that waits (a posting's provider calls are rarely raced), None till then.
        self._done: dict[str, asyncio.Event | None] = {}
        self._recorded: dict[TccBranch, Payment] = {}

    def recorded(self, payment: Payment) -> None:
        """Keep a copy of the payment as this process just committed it, for its branch's
        Confirm (`take_recorded`); the oldest copy goes once RECORDED_LIMIT are kept."""
        kept = self._recorded
        kept.pop(payment.branch, None)
        if len(kept) >= RECORDED_LIMIT:
            del kept[next(iter(kept))]
        kept[payment.branch] = payment.snapshot()

    def take_recorded(self, branch: TccBranch) -> Payment | None:
        """The branch's payment as this process last committed it, once (None: none kept). It
        may have changed since: whoever writes on it must guard that the row still holds it."""
        return self._recorded.pop(branch, None)

    def working_on(self, payment_id: str) -> _Working:
        """Mark the payment's provider work as under way for the `with` block (nested marks:
        the outermost one ends it)."""
        return _Working(self._done, payment_id)

    async def settled(self, payment_id: str, timeout: float) -> bool:
        """Wait (at most `timeout` s) until the payment's provider work under way here is over;
        whether there was any and it ended (False: none here, or still going: act as usual)."""
        working = self._done
        if payment_id not in working:
            return False
        done = working[payment_id]
        if done is None:
            done = working[payment_id] = asyncio.Event()
        # The wait in the caller's own task: asyncio.wait_for (Python 3.11) runs the awaited
        # coroutine in a task of its own, a task and its scheduling per raced event (issue 13).
        try:
            async with asyncio.timeout(timeout):
                await done.wait()
        except TimeoutError:
            pass
        return done.is_set()


class _Working:
    """The block of InFlight.working_on: a class, not a generator context manager, and no event
    unless a waiter asks for one (issue 13: contextlib's helper, __enter__ and __exit__ with the
    generator's two steps, and an asyncio.Event made and set, per provider call of a posting)."""

    __slots__ = ("_done", "_outermost", "_payment_id")

    def __init__(self, done: dict[str, asyncio.Event | None], payment_id: str) -> None:
        self._done = done
        self._payment_id = payment_id
        self._outermost = False

    def __enter__(self) -> None:
        if self._payment_id not in self._done:
            self._done[self._payment_id] = None
            self._outermost = True

    def __exit__(self, *_: object) -> None:
        if self._outermost:
            done = self._done.pop(self._payment_id)
            if done is not None:
                done.set()
