"""The wallet's business metrics (the platform already counts and times every RPC)."""

from __future__ import annotations

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
