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
    # gathered for at most this long while earlier batches run, at most this many batches at once.
    # One: a group is one statement in the common case, so a second group in flight mostly split
    # the calls waiting into two small groups; with one, the calls that arrive while a group runs
    # go together next (c=32: 8-10 transfers per group instead of 3-4, wallet CPU per transfer
    # -20-30%, PostgreSQL's -25-45%; Reserve+Confirm groups 3.5/5.5 instead of 2.5/3.5; issue 13).
    transfer_batch_max_items: int = 64
    transfer_batch_window_seconds: float = 0.001
    transfer_batches_in_flight: int = 1
    # ReserveHold calls grouped into one transaction, and so ConfirmHold calls (1 = no grouping).
    hold_batch_max_items: int = 64
