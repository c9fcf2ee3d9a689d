"""The payments use cases' configuration (built from the settings in entrypoints/main.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from payments.domain.plans import Plan


@dataclass(frozen=True, slots=True)
class Policy:
    """The service's configuration as the use cases need it."""

    provider_timeout: float = 8.0
    poll_base: float = 1.0
    poll_max: float = 60.0
    poll_batch: int = 20
    # ReconcileProvider (OPS-3): payments re-fetched from their providers at once.
    reconcile_concurrency: int = 8
    # Its sweep (OPS-3): older payments checked a round from a durable cursor, through payments
    # changed within the horizon; provider reads a second at most (every check of the round);
    # how long a payment's provider may stay unreadable before it is reported.
    reconcile_sweep_per_round: int = 20
    reconcile_sweep_horizon_days: float = 120.0
    reconcile_reads_per_second: float = 10.0
    reconcile_unreadable_grace_seconds: float = 3600.0
    # Re-fetch of payments waiting for the provider (a backstop for lost webhooks).
    watch_base: float = 5.0
    watch_max: float = 60.0
    checkout_cancel_url: str = "http://127.0.0.1:8080/api/payments/checkout/cancel?ref={ref}"
    checkout_ttl_seconds: int = 3600
    # Where a provider's page hands the outcome back to us first (Razorpay, Fatora); {provider}.
    checkout_return_url: str = "http://127.0.0.1:8080/api/payments/return/{provider}?ref={ref}"
    plans: tuple[Plan, ...] = ()
    callback_subsystems: frozenset[str] = frozenset()
    job_credits_per_post: int = 500  # CR-3: what one job post costs, for "max job posts"
    grant_retry_base: float = 0.5  # backoff of a credit grant the wallet did not acknowledge
    grant_retry_max: float = 60.0
    # Payouts (ESC-9): where the provider's onboarding returns to ({user} optional), the
    # subsystem whose callbacks carry payout.paid / payout.failed, and the recovery backoff.
    payout_return_url: str = "http://127.0.0.1:8080/api/wallet/payout-account"
    payout_refresh_url: str = "http://127.0.0.1:8080/api/wallet/payout-account"
    payout_country: str = "US"
    payout_subsystem: str = "marketplace"
    payout_retry_base: float = 0.5
    payout_retry_max: float = 60.0
    # A payout in transit is re-fetched this often (a backstop for a lost webhook).
    payout_watch_seconds: float = 30.0
    # A paid payout is re-fetched this often for this long: the bank may still return it (a
    # backstop for a lost payout.failed after payout.paid; Stripe reports returns within days).
    payout_return_watch_seconds: float = 3600.0
    payout_return_window_seconds: float = 10 * 24 * 3600.0
    # The auditor's `withdrawal_stuck` (OPS-3): a step of ours still not done past the first, a
    # payout still in transit (the bank has not answered) past the second.
    withdrawal_step_grace_seconds: float = 900.0
    withdrawal_transit_grace_seconds: float = 7 * 24 * 3600.0
    # ESC-3: coins per one major unit of each currency sold (PAYMENTS_COIN_RATES=USD:100).
    coin_rates: dict[str, int] = field(default_factory=lambda: {"USD": 100})
    # ESC-5: the funding fee of a direct job payment, in basis points of its coins (the jobs
    # service's JOBS_ACCEPTANCE_FEE_BPS rule: floor to revenue, the rest to the escrow).
    job_payment_fee_bps: int = 1000

    @property
    def lease_seconds(self) -> float:
        """How long one in-flight provider step keeps other workers off a payment."""
        return self.provider_timeout * 2 + 5

    def cancel_url(self, ref: str) -> str:
        return self.checkout_cancel_url.replace("{ref}", ref)

    def return_url(self, provider: str, ref: str) -> str:
        return self.checkout_return_url.replace("{provider}", provider).replace("{ref}", ref)
