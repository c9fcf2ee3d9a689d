"""The wallet's settings, read from WALLET_* environment variables (WALLET_DATABASE_URL required)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from hirepay_platform.settings import ServiceSettings


class WalletSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WALLET_", extra="ignore", frozen=True)

    grpc_port: int = 50051
    metrics_port: int = 9101
    # How often the expiry worker looks for pending holds past their expiry, and how many it
    # releases per transaction.
    hold_expiry_interval_seconds: float = 1.0
    hold_expiry_batch_size: int = 200
    # Grouping of concurrent single Transfer calls into one transaction (1 item = no grouping).
    transfer_batch_max_items: int = 64
    transfer_batch_window_ms: float = 1.0
    # One by default; two overlap a batch's COMMIT wait (see service_layer/config.py).
    transfer_batches_in_flight: int = 1
    # Grouping of concurrent ReserveHold calls, and of ConfirmHold calls (1 item = no grouping);
    # window and batches in flight as for transfers.
    hold_batch_max_items: int = 64
