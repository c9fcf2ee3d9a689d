"""The payments service's settings, from PAYMENTS_* environment variables (fails fast when invalid)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from hirepay_platform.settings import ServiceSettings


class PaymentsSettings(ServiceSettings):
    """Everything the payments process reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore", frozen=True)

    grpc_port: int = 50052
    metrics_port: int = 9102
    # The provider of new payments that do not name one (a payment keeps the one that made it).
    default_provider: str = "stripe"
    # Each provider is offered only when its credentials are set (an empty key: not offered).
    # Stripe: the local sandbox by default; an empty base means real Stripe.
    stripe_api_key: SecretStr = SecretStr("sk_test_sandbox")
    stripe_api_base: str = "http://127.0.0.1:12111"
    # Comma-separated webhook signing secrets; several are accepted during a rotation.
    stripe_webhook_secrets: SecretStr = SecretStr("")
    # PayPal (Orders v2 through paypal-server-sdk): an empty base means PayPal's own host for
    # `paypal_environment` (sandbox or production); the webhook id verifies deliveries.
    paypal_client_id: str = ""
    paypal_client_secret: SecretStr = SecretStr("")
    paypal_environment: str = "sandbox"
    paypal_api_base: str = ""
    paypal_webhook_id: str = ""
    # Razorpay (the razorpay SDK): an empty base means api.razorpay.com. The checkout page URL
    # ({order_id}, {callback_url}): the local sandbox's page, or your page running Checkout.js.
    razorpay_key_id: str = ""
    razorpay_key_secret: SecretStr = SecretStr("")
    razorpay_api_base: str = ""
    razorpay_webhook_secret: SecretStr = SecretStr("")
    razorpay_checkout_url: str = ""
    # The account's capture window: an uncaptured (voided) authorization is refunded by Razorpay
    # after it, and reads as authorized until then (the reconciliation allows that, no longer).
    razorpay_auto_refund_seconds: int = Field(default=5 * 24 * 3600, gt=0)
    # Fatora (its REST API over httpx).
    fatora_api_key: SecretStr = SecretStr("")
    fatora_api_base: str = "https://api.fatora.io"
    fatora_webhook_secret: SecretStr = SecretStr("")
    # Threads for the providers whose official SDKs block (PayPal, Razorpay), so they never run
    # on the event loop: one per call in flight, so this is how many such calls may wait on the
    # provider at once (threads start on demand; a slow provider must not queue payments here).
    provider_sdk_threads: int = Field(default=128, ge=1)
    # Connections each HTTP client to a provider (Stripe's SDK, Fatora) may hold open at once, all
    # kept alive between calls: one per call in flight. httpx's own default (100, 20 kept alive)
    # would queue calls beyond 100 and reopen connections after every burst (issue 13).
    provider_max_connections: int = Field(default=256, ge=1)
    provider_timeout_seconds: float = 8.0
    # The consistency auditor's ReconcileProvider (OPS-3): how many payments are re-fetched from
    # their providers at once. One at a time, 100 payments at real Stripe's ~300 ms a call take
    # 30-60 s, past the auditor's 10 s deadline; a round also stops starting checks when the
    # caller's deadline would not allow one more and answers with those it checked.
    reconcile_concurrency: int = Field(default=8, ge=1)
    # Its sweep of older payments (OPS-3): so many a round from a durable cursor through the
    # payments changed within the horizon (0: none), every check of a round paced to the
    # provider read rate, and a payment whose provider stays unreadable past the grace reported.
    reconcile_sweep_per_round: int = Field(default=20, ge=0, le=500)
    reconcile_sweep_horizon_days: float = Field(default=120.0, gt=0)
    reconcile_reads_per_second: float = Field(default=10.0, gt=0)
    reconcile_unreadable_grace_seconds: float = Field(default=3600.0, ge=0)
    # Backoff of the poller that resolves UNKNOWN payments and pending refunds.
    poll_interval_seconds: float = 1.0
    poll_max_interval_seconds: float = 60.0
    poll_batch_size: int = 20
    # Watching payments that wait for the provider (PROCESSING, REQUIRES_ACTION): re-fetched with
    # backoff from the first to the second value, so a lost webhook delays settlement <= the max.
    watch_interval_seconds: float = 5.0
    watch_max_interval_seconds: float = 60.0
    # Where a customer who cancels a hosted checkout lands first ({ref} = our transaction/payment id).
    checkout_cancel_url: str = "http://127.0.0.1:8080/api/payments/checkout/cancel?ref={ref}"
    checkout_ttl_seconds: int = 3600
    # Where Razorpay's and Fatora's pages hand the outcome back ({provider}, {ref}).
    checkout_return_url: str = "http://127.0.0.1:8080/api/payments/return/{provider}?ref={ref}"
    # Optional JSON file overriding the default plans.
    plans_file: str = ""
    # Optional signed HTTP callbacks of settlement events: "subsystem=url,subsystem2=url2" or JSON.
    callback_urls: str = ""
    callback_secret: SecretStr = SecretStr("")
    callback_timeout_seconds: float = 5.0
    # The wallet (plan credits and purchases are booked on its ledger); empty = not wired.
    wallet_target: str = "127.0.0.1:50051"
    rpc_timeout_seconds: float = 10.0
    # What one job post costs in JOB_CREDIT (shown as "max job posts", CR-3).
    job_credits_per_post: int = 500
    grant_interval_seconds: float = 0.5
    # Payouts (ESC-9): where the provider's onboarding returns to (the contractor's app), the
    # default country of new payout accounts, the subsystem whose callbacks carry payout.paid /
    # payout.failed, the recovery worker's interval and how often a payout in transit is
    # re-fetched (a backstop for a lost webhook).
    payout_return_url: str = "http://127.0.0.1:8080/api/wallet/payout-account"
    payout_refresh_url: str = "http://127.0.0.1:8080/api/wallet/payout-account"
    payout_country: str = "US"
    payout_subsystem: str = "marketplace"
    payout_interval_seconds: float = 0.5
    payout_watch_seconds: float = 30.0
    # A paid payout is re-fetched every PAYOUT_RETURN_WATCH_SECONDS for
    # PAYOUT_RETURN_WINDOW_SECONDS: the bank may still return it (a lost payout.failed).
    payout_return_watch_seconds: float = 3600.0
    payout_return_window_seconds: float = 10 * 24 * 3600.0
    # The auditor's `withdrawal_stuck` (OPS-3): a withdrawal step of ours (requested, sending, a
    # known outcome or a return not yet on the ledger) unfinished past the first; a payout in
    # transit past the second (Stripe's bank answers within days).
    withdrawal_step_grace_seconds: float = 900.0
    withdrawal_transit_grace_seconds: float = 7 * 24 * 3600.0
    # ESC-3: coins per one major unit of each currency coins are sold in ("USD:100,EUR:110").
    coin_rates: str = "USD:100"
    # ESC-5: the platform's funding fee of a direct job payment, in basis points of its coins.
    job_payment_fee_bps: int = 1000

    @property
    def webhook_secrets(self) -> list[str]:
        raw = self.stripe_webhook_secrets.get_secret_value()
        return [s.strip() for s in raw.split(",") if s.strip()]
