"""What the wallet's use cases take from configuration, as a frozen value (built from settings)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WalletConfig:
    """Parameters of the hold-expiry use case and its worker (WALLET_HOLD_EXPIRY_*)."""

    # How often the expiry worker looks for pending holds past their expiry.
    hold_expiry_interval_seconds: float = 1.0
    # How many expired holds one transaction releases (each batch is locked SKIP LOCKED).
    hold_expiry_batch_size: int = 200
