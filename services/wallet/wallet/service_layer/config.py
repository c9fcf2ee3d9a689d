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
    # gathered for at least this long while earlier batches run, at most this many batches at once.
    # A group is one statement that commits itself in the common case, and most of its time is
    # the wait for its COMMIT's WAL flush (2-3 ms on the bench machine's disk), in which the
    # wallet and PostgreSQL have nothing to do for it. With one batch in flight (the default), the
    # calls that come back while a group runs go together next, the largest groups and the least
    # CPU per call, and every call waits for a whole group before its own (c=32 transfers: ~12 per
    # group). Two in flight overlap that wait; with a 1 ms window the second had taken the few
    # calls arriving in 1 ms and split the rest (groups 3-4, CPU per transfer +20-30%); gathering
    # for half a batch's time (batcher.GroupBatcher.gather_seconds) keeps groups ~10 at about the
    # same CPU per call. Its throughput against one in flight was not told apart from the noise of
    # the shared machine (round 10, issue 13): measure it on a quiet one before making it default.
    transfer_batch_max_items: int = 64
    transfer_batch_window_seconds: float = 0.001
    transfer_batches_in_flight: int = 1
    # ReserveHold calls grouped into one transaction, and so ConfirmHold calls (1 = no grouping).
    hold_batch_max_items: int = 64
