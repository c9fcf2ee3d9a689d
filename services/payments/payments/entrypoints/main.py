"""The payments process: settings, database, the providers, the gRPC servicer and workers."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay_platform.db import Database
from hirepay_platform.identity import AccessPolicy
from hirepay_platform.notifier import CallbackSender, parse_callback_urls
from hirepay_platform.server import GrpcApp
from hirepay_platform.settings import load_settings
from payments.adapters.blocking import BlockingCalls
from payments.adapters.fatora_provider import FatoraProvider
from payments.adapters.payout_ledger import WalletPayoutLedger
from payments.adapters.paypal_provider import PayPalProvider
from payments.adapters.razorpay_provider import RazorpayProvider
from payments.adapters.stripe_provider import StripeProvider
from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain.ledger import BPS, parse_coin_rates
from payments.domain.plans import DEFAULT_PLANS, Plan, parse_plans
from payments.domain.provider import PaymentProvider
from payments.entrypoints.servicer import SERVICE_NAME, PaymentsServicer
from payments.entrypoints.settings import PaymentsSettings
from payments.entrypoints.workers import (
    run_callback_relay,
    run_credit_grants,
    run_poller,
    run_withdrawals,
)
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.in_flight import InFlight
from payments.service_layer.providers import ProviderRegistry
from payments.service_layer.wakeup import Wakeup


def build_providers(settings: PaymentsSettings) -> ProviderRegistry:
    """One registration per provider: offered only when its credentials are set."""
    timeout = settings.provider_timeout_seconds
    threads = BlockingCalls(settings.provider_sdk_threads, timeout)
    offered: list[PaymentProvider] = []
    if settings.stripe_api_key.get_secret_value():
        offered.append(
            StripeProvider(
                settings.stripe_api_key.get_secret_value(),
                api_base=settings.stripe_api_base,
                webhook_secrets=settings.webhook_secrets,
                timeout=timeout,
                max_connections=settings.provider_max_connections,
            )
        )
    if settings.paypal_client_id and settings.paypal_client_secret.get_secret_value():
        offered.append(
            PayPalProvider(
                settings.paypal_client_id,
                settings.paypal_client_secret.get_secret_value(),
                threads,
                environment=settings.paypal_environment,
                api_base=settings.paypal_api_base,
                webhook_id=settings.paypal_webhook_id,
            )
        )
    if settings.razorpay_key_id and settings.razorpay_key_secret.get_secret_value():
        offered.append(
            RazorpayProvider(
                settings.razorpay_key_id,
                settings.razorpay_key_secret.get_secret_value(),
                threads,
                api_base=settings.razorpay_api_base,
                webhook_secret=settings.razorpay_webhook_secret.get_secret_value(),
                checkout_url=settings.razorpay_checkout_url,
                auto_refund_after=timedelta(seconds=settings.razorpay_auto_refund_seconds),
            )
        )
    if settings.fatora_api_key.get_secret_value():
        offered.append(
            FatoraProvider(
                settings.fatora_api_key.get_secret_value(),
                api_base=settings.fatora_api_base,
                webhook_secret=settings.fatora_webhook_secret.get_secret_value(),
                timeout=timeout,
                max_connections=settings.provider_max_connections,
            )
        )
    try:
        return ProviderRegistry(offered, settings.default_provider)
    except ValueError as exc:  # fail fast, naming the setting
        raise SystemExit(
            f"payments: PAYMENTS_DEFAULT_PROVIDER / provider credentials: {exc}"
        ) from None


# Who may call what: the gateway (subscriptions, coin purchases, checkout, webhooks, reads for its
# users, payout accounts and withdrawals) and jobs (the saga's Try/Confirm/Cancel, refunds,
# settlement events, the direct job payment's checkout, and the consistency auditor's read-only
# ListPayments / ReconcileProvider / AuditLedgerBookings); object rules in service_layer/access.py.
ACCESS = AccessPolicy.of(
    {"gateway", "jobs"},
    {
        **{
            name: {"jobs"}
            for name in (
                "Authorize",
                "Capture",
                "Void",
                "GetPayment",
                "GetPaymentByBranch",
                "ListPaymentAttempts",
                "StreamSettlementEvents",
                "ListPayments",
                "ReconcileProvider",
                "CreateJobPaymentCheckout",
                "AuditLedgerBookings",
            )
        },
        **{
            name: {"gateway"}
            for name in (
                "CreatePayoutAccount",
                "GetPayoutAccount",
                "RequestWithdrawal",
                "GetWithdrawal",
                "ListWithdrawals",
            )
        },
    },
)


def _parsed(settings: PaymentsSettings) -> tuple[tuple[Plan, ...], dict[str, str]]:
    """The plan catalogue and the callback URLs; a bad value stops start-up naming the setting."""
    plans = DEFAULT_PLANS
    try:
        if settings.plans_file:
            plans = parse_plans(Path(settings.plans_file).read_text())
        callback_urls = parse_callback_urls(settings.callback_urls)
    except (OSError, ValueError) as exc:  # fail fast, saying which setting is wrong
        raise SystemExit(
            f"payments: invalid PAYMENTS_PLANS_FILE or PAYMENTS_CALLBACK_URLS: {exc}"
        ) from None
    if callback_urls and not settings.callback_secret.get_secret_value():
        raise SystemExit("PAYMENTS_CALLBACK_SECRET is required when PAYMENTS_CALLBACK_URLS is set")
    return plans, callback_urls


def _coin_rates(settings: PaymentsSettings) -> dict[str, int]:
    """PAYMENTS_COIN_RATES and PAYMENTS_JOB_PAYMENT_FEE_BPS; a bad value stops start-up."""
    if not 0 <= settings.job_payment_fee_bps <= BPS:
        raise SystemExit(f"payments: PAYMENTS_JOB_PAYMENT_FEE_BPS must be 0..{BPS}")
    try:
        return parse_coin_rates(settings.coin_rates)
    except ValueError as exc:
        raise SystemExit(f"payments: invalid PAYMENTS_COIN_RATES: {exc}") from None


def build_app(settings: PaymentsSettings) -> GrpcApp:
    plans, callback_urls = _parsed(settings)
    coin_rates = _coin_rates(settings)
    config = Policy(
        provider_timeout=settings.provider_timeout_seconds,
        poll_base=settings.poll_interval_seconds,
        poll_max=settings.poll_max_interval_seconds,
        poll_batch=settings.poll_batch_size,
        reconcile_concurrency=settings.reconcile_concurrency,
        reconcile_sweep_per_round=settings.reconcile_sweep_per_round,
        reconcile_sweep_horizon_days=settings.reconcile_sweep_horizon_days,
        reconcile_reads_per_second=settings.reconcile_reads_per_second,
        reconcile_unreadable_grace_seconds=settings.reconcile_unreadable_grace_seconds,
        watch_base=settings.watch_interval_seconds,
        watch_max=settings.watch_max_interval_seconds,
        checkout_cancel_url=settings.checkout_cancel_url,
        checkout_ttl_seconds=settings.checkout_ttl_seconds,
        checkout_return_url=settings.checkout_return_url,
        plans=plans,
        callback_subsystems=frozenset(callback_urls),
        job_credits_per_post=settings.job_credits_per_post,
        payout_return_url=settings.payout_return_url,
        payout_refresh_url=settings.payout_refresh_url,
        payout_country=settings.payout_country,
        payout_subsystem=settings.payout_subsystem,
        payout_watch_seconds=settings.payout_watch_seconds,
        payout_return_watch_seconds=settings.payout_return_watch_seconds,
        payout_return_window_seconds=settings.payout_return_window_seconds,
        withdrawal_step_grace_seconds=settings.withdrawal_step_grace_seconds,
        withdrawal_transit_grace_seconds=settings.withdrawal_transit_grace_seconds,
        coin_rates=coin_rates,
        job_payment_fee_bps=settings.job_payment_fee_bps,
    )
    providers = build_providers(settings)
    published = Wakeup()
    owed = Wakeup()  # a commit recorded a ledger booking: the booking worker runs
    # The pay-to-post path's units of work plan each statement once, generically; the other RPCs
    # and the workers' rounds keep PostgreSQL's default plans (db.Database, issue 13).
    database = Database.from_settings(
        settings,
        functools.partial(SqlPaymentsUnitOfWork, published=published, owed=owed),
        probe_table="payments",
        generic_plan_requests=True,
    )

    ledger = _ledger(settings)
    in_flight = InFlight()

    def deps_on(uow: SqlPaymentsUnitOfWork) -> Deps:
        return Deps(
            uow, providers, config, ledger=ledger, payout_ledger=ledger, in_flight=in_flight
        )

    def deps() -> Deps:
        return deps_on(database.uow())

    def posting_deps() -> Deps:
        """Authorize's, Capture's, Void's and the webhooks': on the request path's engine."""
        return deps_on(database.request_uow())

    app = GrpcApp("payments", settings, ACCESS)
    stopping = asyncio.Event()
    app.on_startup(database.start)
    app.add_readiness_check("database", database.readiness_check())
    app.add_service(
        pb_grpc.add_PaymentsServiceServicer_to_server,
        PaymentsServicer(deps, stopping, published, posting_deps=posting_deps),
        SERVICE_NAME,
    )

    async def poller(stop: asyncio.Event) -> None:
        await run_poller(deps, stop, interval=min(settings.poll_interval_seconds, 1.0))

    app.add_worker(poller)
    if ledger is not None:
        app.add_worker(functools.partial(_grants, deps, settings.grant_interval_seconds, owed))
        app.add_worker(functools.partial(_withdrawals, deps, settings.payout_interval_seconds))
    if callback_urls:
        sender = CallbackSender(
            callback_urls,
            settings.callback_secret.get_secret_value(),
            settings.callback_timeout_seconds,
        )

        async def relay(stop: asyncio.Event) -> None:
            stopping_task = asyncio.create_task(stop.wait())
            try:
                await run_callback_relay(deps, sender, stop)
            finally:
                stopping_task.cancel()
                await sender.close()

        app.add_worker(relay)

    async def on_stop() -> None:
        stopping.set()
        published.notify()  # following streams end now rather than after their idle wait
        if ledger is not None:
            await ledger.close()
        await database.stop()

    app.on_shutdown(on_stop)
    return app


def _ledger(settings: PaymentsSettings) -> WalletPayoutLedger | None:
    """The wallet's ledger for plan purchases and withdrawals; None when PAYMENTS_WALLET_TARGET
    is empty."""
    if not settings.wallet_target:
        return None
    return WalletPayoutLedger(settings.wallet_target, settings.rpc_timeout_seconds)


async def _grants(
    deps: Callable[[], Deps], interval: float, owed: Wakeup, stop: asyncio.Event
) -> None:
    await run_credit_grants(deps, stop, interval=interval, owed=owed)


async def _withdrawals(deps: Callable[[], Deps], interval: float, stop: asyncio.Event) -> None:
    await run_withdrawals(deps, stop, interval=interval)


def main() -> None:
    build_app(load_settings(PaymentsSettings)).run()
