"""Typed settings of the jobs service, read from JOBS_* environment variables (fail fast)."""

from __future__ import annotations

import json
import socket
import uuid
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from hirepay_platform.settings import ServiceSettings
from jobs.domain.escrow import CancelPolicy
from jobs.domain.pricing import PriceList, RefundPolicy
from jobs.service_layer.config import JobsConfig

DEFAULT_POSTING_FEES: dict[str, dict[str, int]] = {
    "default": {"USD": 9900, "EUR": 8900, "GBP": 7900},
    "engineering": {"USD": 14900, "EUR": 13900, "GBP": 11900},
    "design": {"USD": 9900, "EUR": 8900, "GBP": 7900},
    "sales": {"USD": 9900, "EUR": 8900, "GBP": 7900},
    "marketing": {"USD": 9900, "EUR": 8900, "GBP": 7900},
    "operations": {"USD": 7900, "EUR": 6900, "GBP": 5900},
    "support": {"USD": 5900, "EUR": 4900, "GBP": 4900},
}


class JobsSettings(ServiceSettings):
    """JOBS_DATABASE_URL is required; everything else has a development default."""

    model_config = SettingsConfigDict(env_prefix="JOBS_", extra="ignore", frozen=True)

    grpc_port: int = 50053
    metrics_port: int = 9103
    payments_target: str = "127.0.0.1:50052"
    wallet_target: str = "127.0.0.1:50051"
    terms_version: str = "2026-11"
    # JSON: {"category": {"CUR": minor units}, "default": {...}}; categories are its keys.
    posting_fees: dict[str, dict[str, int]] = Field(default_factory=lambda: DEFAULT_POSTING_FEES)
    # Extra categories priced by "default" (JSON list).
    extra_categories: list[str] = Field(default_factory=lambda: ["finance", "other"])
    default_currency: str = "USD"
    credits_fee: int = 500
    posting_days: int = 30
    # JSON: {"full_refund_within_hours": 24, "late_refund_percent": 0}
    refund_policy: dict[str, Any] = Field(
        default_factory=lambda: {"full_refund_within_hours": 24, "late_refund_percent": 0}
    )
    saga_deadline_seconds: float = 900.0
    settlement_deadline_seconds: float = 86_400.0
    settlement_poll_seconds: float = 60.0
    lease_seconds: float = 30.0
    rpc_timeout_seconds: float = 10.0
    # A Confirm refused this many times in a way waiting cannot fix is final (the job is never live).
    capture_max_refusals: int = 3
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 60.0
    recovery_interval_seconds: float = 1.0
    # The consistency auditor (OPS-3): a round every so often (0 = no auditor in this process),
    # the slack before an in-flight payment or an expired hold counts, payments reconciled.
    audit_interval_seconds: float = 60.0
    audit_grace_seconds: float = 600.0
    # A full sweep of every row ever written on the first round and then every so often; the
    # rounds between read what changed since the previous one, minus the overlap (issue 13).
    audit_full_sweep_seconds: float = 3_600.0
    audit_overlap_seconds: float = 120.0
    audit_hold_grace_seconds: int = 300
    audit_reconcile_limit: int = 100
    expiry_interval_seconds: float = 30.0
    settlement_reconnect_seconds: float = 1.0
    idempotency_wait_seconds: float = 10.0
    hold_expiry_seconds: int = 3_600
    # PAY-14: failed payments of one company within the window that block posting (0 = off).
    max_failed_payments: int = 10
    failed_payments_window_seconds: float = 3_600.0
    # Provider payment method of a bank transfer when the client sends none (the sandbox's debit).
    bank_transfer_payment_method: str = "pm_bank_transfer"
    # Marketplace offers: validity (shorter than a card authorization lives, 7 days at Stripe),
    # fees in basis points (10% at acceptance, 20% at completion).
    offer_validity_seconds: int = 172_800
    card_authorization_seconds: int = 7 * 86_400
    offer_hold_grace_seconds: int = 3_600
    acceptance_fee_bps: int = 1_000
    completion_fee_bps: int = 2_000
    # ESC-8 cancellation policy (JSON): {"refund_fee_before_start": true,
    # "refund_fee_after_start": false, "cancel_after_start": true}.
    cancel_policy: dict[str, bool] = Field(default_factory=dict)
    # Signed callbacks of marketplace events (issue 9 point 9, API-5): "marketplace=url" (or a JSON
    # object {subsystem: url}); the secret signs them (X-Hirepay-Signature), required with URLs.
    callback_urls: str = ""
    callback_secret: SecretStr = SecretStr("")
    callback_timeout_seconds: float = 5.0
    notify_interval_seconds: float = 0.5
    instance_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    )

    @field_validator("cancel_policy")
    @classmethod
    def _known_cancel_policy(cls, value: dict[str, bool]) -> dict[str, bool]:
        known = set(CancelPolicy.__dataclass_fields__)
        if not set(value) <= known:
            raise ValueError(f"unknown cancel policy keys {sorted(set(value) - known)}")
        return value

    @field_validator("posting_fees")
    @classmethod
    def _fees_are_positive(cls, value: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        for category, prices in value.items():
            for currency, amount in prices.items():
                if amount <= 0 or currency != currency.upper():
                    raise ValueError(f"bad fee {category}/{currency}: {amount}")
        return value

    @model_validator(mode="after")
    def _marketplace_rules_hold(self) -> JobsSettings:
        if not 0 < self.offer_validity_seconds < self.card_authorization_seconds:
            raise ValueError(
                "JOBS_OFFER_VALIDITY_SECONDS must be positive and shorter than a card "
                "authorization lives (JOBS_CARD_AUTHORIZATION_SECONDS)"
            )
        for name in ("acceptance_fee_bps", "completion_fee_bps"):
            if not 0 <= getattr(self, name) <= 10_000:
                raise ValueError(f"JOBS_{name.upper()} must be 0..10000 basis points")
        if self.acceptance_fee_bps + self.completion_fee_bps > 10_000:
            raise ValueError("the acceptance and completion fees together exceed the amount")
        return self

    def jobs_config(self) -> JobsConfig:
        """The use cases' view of the settings."""
        categories = frozenset(
            {c.lower() for c in self.posting_fees if c != "default"}
            | (
                {c.lower() for c in self.extra_categories}
                if "default" in self.posting_fees
                else set()
            )
        )
        return JobsConfig(
            price_list=PriceList(
                fees={k.lower(): v for k, v in self.posting_fees.items()},
                categories=categories,
                default_currency=self.default_currency,
                credits_fee=self.credits_fee,
            ),
            terms_version=self.terms_version,
            posting_days=self.posting_days,
            refund_policy=RefundPolicy(**self.refund_policy),
            instance_id=self.instance_id,
            lease_seconds=self.lease_seconds,
            saga_deadline_seconds=self.saga_deadline_seconds,
            settlement_deadline_seconds=self.settlement_deadline_seconds,
            settlement_poll_seconds=self.settlement_poll_seconds,
            capture_max_refusals=self.capture_max_refusals,
            audit_grace_seconds=self.audit_grace_seconds,
            audit_full_sweep_seconds=self.audit_full_sweep_seconds,
            audit_overlap_seconds=self.audit_overlap_seconds,
            retry_base_seconds=self.retry_base_seconds,
            retry_max_seconds=self.retry_max_seconds,
            idempotency_wait_seconds=self.idempotency_wait_seconds,
            hold_expiry_seconds=self.hold_expiry_seconds,
            bank_transfer_token=self.bank_transfer_payment_method,
            max_failed_payments=self.max_failed_payments,
            failed_payments_window_seconds=self.failed_payments_window_seconds,
            offer_validity_seconds=self.offer_validity_seconds,
            offer_hold_grace_seconds=self.offer_hold_grace_seconds,
            acceptance_fee_bps=self.acceptance_fee_bps,
            completion_fee_bps=self.completion_fee_bps,
            cancel_policy=CancelPolicy(**self.cancel_policy),
        )


def describe(settings: JobsSettings) -> str:
    """A log line of the non-secret settings."""
    return json.dumps(
        {
            "payments_target": settings.payments_target,
            "wallet_target": settings.wallet_target,
            "terms_version": settings.terms_version,
            "instance_id": settings.instance_id,
        }
    )
