"""The wallet's business metrics (the platform already counts and times every RPC)."""

from __future__ import annotations

import functools
from collections.abc import Callable

from prometheus_client import Counter, Histogram

from hirepay_platform import metrics

TRANSFERS = Counter(
    "hirepay_wallet_transfers_total",
    "Transfers requested, by operation and outcome (posted, replayed, or the error reason).",
    ["operation", "outcome"],
)
HOLD_TRANSITIONS = Counter(
    "hirepay_wallet_hold_transitions_total",
    "Hold state transitions (from 'none' for a new hold or a null compensation).",
    ["from_state", "to_state"],
)
EXPIRED_HOLDS_RELEASED = Counter(
    "hirepay_wallet_expired_holds_released_total",
    "Pending holds released by the expiry worker after their expiry passed.",
)
GROUPED_BATCH_SIZE = Histogram(
    "hirepay_wallet_grouped_calls_per_batch",
    "Single calls (Transfer, ReserveHold, ConfirmHold) a batcher ran together in one transaction.",
    ["operation"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)


# Counted through the platform's one-call counting (hirepay_platform.metrics.count/observer): a
# label set's series looked up once, its value updated in one call. Counter.inc() on a child is
# four Python calls (its observability checks, then the value), on every money-moving call the
# wallet answers: about three per Reserve+Confirm pair (issue 13). The label sets are few.


def count_transfer(operation: str, outcome: str) -> None:
    """One more TRANSFERS of this operation and outcome."""
    metrics.count(TRANSFERS, operation, outcome)


@functools.cache
def transfer_counter(operation: str, outcome: str) -> Callable[[], None]:
    """`count_transfer` of one operation and outcome as one call (the hot Transfer call's)."""
    return metrics.incrementer(metrics.child(TRANSFERS, operation, outcome))


def count_hold_transition(from_state: str, to_state: str) -> None:
    """One more HOLD_TRANSITIONS of this transition."""
    metrics.count(HOLD_TRANSITIONS, from_state, to_state)


@functools.cache
def hold_transition_count(from_state: str, to_state: str) -> Counter:
    """HOLD_TRANSITIONS of one transition (the expiry worker counts a batch at once)."""
    return metrics.child(HOLD_TRANSITIONS, from_state, to_state)


def batch_size_observer(operation: str) -> Callable[[float], None]:
    """GROUPED_BATCH_SIZE of one batcher, as one call per batch."""
    return metrics.observer(metrics.child(GROUPED_BATCH_SIZE, operation))
