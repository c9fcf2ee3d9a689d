"""What the wallet's use cases take from configuration, as a frozen value (built from settings)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WalletConfig:
    """Parameters of the hold-expiry worker (WALLET_HOLD_EXPIRY_*) and of the grouping of single
    Transfer calls (WALLET_TRANSFER_BATCH_*) and of single ReserveHold and ConfirmHold calls
    (WALLET_HOLD_BATCH_MAX_ITEMS; same window and batches in flight) into batches."""

    # How often the expiry worker looks for pending holds past their expiry.
    hold_expiry_interval_seconds: float = 1.0
    # How many expired holds one transaction releases (each batch is locked SKIP LOCKED).
    hold_expiry_batch_size: int = 200
    # Single Transfer calls grouped into one transaction: at most this many (1 = no grouping),
    # gathered for at most this long while earlier batches run, at most this many batches at once
    # (2 measured best on 2 cores: fewer starves PostgreSQL at moderate load, more makes batches small).
    transfer_batch_max_items: int = 64
    transfer_batch_window_seconds: float = 0.001
    transfer_batches_in_flight: int = 2
    # ReserveHold calls grouped into one transaction, and so ConfirmHold calls (1 = no grouping).
    hold_batch_max_items: int = 64
