"""The postings this process completed moments ago, for the settlement consumer (issue 13).

A card posting's request completes its saga (the job live, the answer stored) and payments'
settlement stream then brings the authorization's and the capture's events of the same payment:
they ask nothing of the saga (settlement_nothing_left_after_completion), and the consumer judges
them without reading the saga again (a statement per burst of events, and its rows made into
sagas, for nothing). Kept in memory only: after a restart, or on another replica, the events are
judged on a read, as any other. Entries expire well after a posting's events arrive, and there
are at most so many.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from hirepay_platform.expiring import ExpiringCache
from jobs.domain.posting_saga import SettlementEvent, settlement_nothing_left_after_completion

# A posting's settlement events follow its completion within a second under load; a minute is
# ample, and bounds how old a saga's state judged this way may be.
REMEMBER_SECONDS = 60.0
MAX_ENTRIES = 10_000


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
