"""The postings this process completed moments ago, for the settlement consumer (issue 13).

A card posting's request completes its saga (the job live, the answer stored) and payments'
settlement stream then brings the authorization's and the capture's events of the same payment:
they ask nothing of the saga (settlement_nothing_left_after_completion), and the consumer judges
them without reading the saga again (a statement per burst of events, and its rows made into
sagas, for nothing). Kept in memory only: after a restart, or on another replica, the events are
judged on a read, as any other. Entries expire well after a posting's events arrive, and there
are at most so many.

Under load a posting's events often arrive while its request is still on its way to the
completion (the Capture's event before the request has committed what the Capture answered): the
consumer then waits for the requests of this process that drive the sagas of its burst, for at
most REQUEST_WAIT_SECONDS, and judges the events as above once they have ended, instead of reading
sagas that it would find held by their requests (issue 13).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from hirepay_platform.expiring import ExpiringCache
from jobs.domain.posting_saga import SettlementEvent, settlement_nothing_left_after_completion

# A posting's settlement events follow its completion within a second under load; a minute is
# ample, and bounds how old a saga's state judged this way may be.
REMEMBER_SECONDS = 60.0
MAX_ENTRIES = 10_000
# How long the settlement consumer waits at most for this process's requests still driving the
# sagas of a burst (a posting's Capture and completion; longer under load) before it reads them.
# It waits only while it keeps up with the stream: events that waited in its queue are of requests
# that have ended meanwhile.
REQUEST_WAIT_SECONDS = 1.0


class CompletedPostings:
    """Sagas this process committed COMPLETED, with their payment, for REMEMBER_SECONDS."""

    def __init__(
        self,
        *,
        remember_seconds: float = REMEMBER_SECONDS,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._remember = remember_seconds
        self._clock = clock
        self._payments: ExpiringCache[str, str] = ExpiringCache(max_entries)
        # The sagas this process's requests drive now, each with the future its settlement
        # events wait on (made only when one waits).
        self._driving: dict[str, asyncio.Future[None] | None] = {}

    def completed(self, saga_id: str, payment_id: str) -> None:
        """The saga was committed COMPLETED with `payment_id` (call once committed)."""
        now = self._clock()
        self._payments.put(saga_id, payment_id, now + self._remember, now)

    def nothing_left(self, event: SettlementEvent) -> bool:
        """Whether the event's saga was completed here moments ago and the event asks nothing of
        it (see settlement_nothing_left_after_completion); False when not known here."""
        payment_id = self._payments.get(event.global_tx_id, self._clock())
        return payment_id is not None and settlement_nothing_left_after_completion(
            payment_id, event
        )

    def driving(self, saga_id: str) -> None:
        """A request of this process drives the saga from now on (before its Try is sent)."""
        self._driving[saga_id] = None

    def done_driving(self, saga_id: str) -> None:
        """The request driving the saga has ended, however it ended (call it always)."""
        waiter = self._driving.pop(saga_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_for_requests(
        self, events: Iterable[SettlementEvent], timeout: float = REQUEST_WAIT_SECONDS
    ) -> bool:
        """Wait until the requests of this process driving the sagas of `events` have ended,
        at most `timeout` seconds; False at once when none does."""
        waiters: list[asyncio.Future[None]] = []
        for event in events:
            saga_id = event.global_tx_id
            if saga_id not in self._driving:
                continue
            waiter = self._driving[saga_id]
            if waiter is None:
                waiter = self._driving[saga_id] = asyncio.get_running_loop().create_future()
            waiters.append(waiter)
        if not waiters:
            return False
        await asyncio.wait(waiters, timeout=timeout)
        return True
