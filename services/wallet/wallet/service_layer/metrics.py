"""The wallet's business metrics (the platform already counts and times every RPC)."""

from __future__ import annotations

import functools

from prometheus_client import Counter, Histogram

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


# A child counter of a label set is the same object on every call; labels() checks and looks its
# labels up each time, for every call the wallet answers (issue 13). The label sets are few.


@functools.cache
def transfer_count(operation: str, outcome: str) -> Counter:
    """TRANSFERS of one operation and outcome."""
    return TRANSFERS.labels(operation, outcome)


@functools.cache
def hold_transition_count(from_state: str, to_state: str) -> Counter:
    """HOLD_TRANSITIONS of one transition."""
    return HOLD_TRANSITIONS.labels(from_state, to_state)
