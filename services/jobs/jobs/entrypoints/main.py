"""The jobs service process: settings, database, participants' clients, servicer and workers."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from hirepay.jobs.v1 import jobs_service_pb2_grpc as pb_grpc
from hirepay_platform.db import create_engine, database_check, make_session_factory
from hirepay_platform.identity import AccessPolicy
from hirepay_platform.notifier import CallbackSender, parse_callback_urls
from hirepay_platform.server import GrpcApp
from hirepay_platform.settings import load_settings
from hirepay_platform.tracing import setup_tracing
from jobs.adapters.consistency import GrpcConsistencySources
from jobs.adapters.escrow_ledger import (
    PaymentsCardRefunds,
    PaymentsJobPayments,
    WalletEscrowLedger,
)
from jobs.adapters.offer_funds import (
    CardOfferFunds,
    CoinOfferFunds,
    GrpcOfferFunds,
    WalletAccounts,
)
from jobs.adapters.participants import (
    CreditsParticipant,
    GrpcParticipants,
    PaymentsParticipant,
    WalletCandidateCredits,
)
from jobs.adapters.unit_of_work import SqlJobsUnitOfWork
from jobs.entrypoints import workers
from jobs.entrypoints.servicer import JobsServicer
from jobs.entrypoints.settings import JobsSettings, describe
from jobs.service_layer.deps import Deps
from jobs.service_layer.ports import (
    ConsistencySources,
    JobsUnitOfWork,
    OfferFundsByMethod,
    Participants,
)
from jobs.service_layer.posting.finished import CompletedPostings

log = logging.getLogger(__name__)

SERVICE_NAME = "hirepay.jobs.v1.JobsService"


@dataclass(frozen=True)
class Adapters:
    """The process's adapters: the database engine, units of work and the participants' clients."""

    engine: AsyncEngine
    uow_factory: Callable[[], JobsUnitOfWork]
    payments: PaymentsParticipant
    wallet: CreditsParticipant
    participants: Participants
    sources: ConsistencySources
    candidate_credits: WalletCandidateCredits
    accounts: WalletAccounts
    offer_funds: OfferFundsByMethod
    escrow: WalletEscrowLedger
    card_refunds: PaymentsCardRefunds
    job_payments: PaymentsJobPayments
    # The pay-to-post RPC's units of work, on an engine of their own whose connections plan each
    # statement once, generically; the rest (workers' rounds, listings) keep PostgreSQL's default
    # plans on `engine` (db.create_engine's generic_plans, issue 13). None: `uow_factory`.
    posting_engine: AsyncEngine | None = None
    posting_uow_factory: Callable[[], JobsUnitOfWork] | None = None


def build_adapters(settings: JobsSettings) -> Adapters:
    """Create the engine and clients at start-up, never at import."""
    engine = create_engine(
        settings.database_url.get_secret_value(),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )
    sessions = make_session_factory(engine)
    posting_engine = create_engine(
        settings.database_url.get_secret_value(),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        generic_plans=True,
    )
    posting_sessions = make_session_factory(posting_engine)

    def uow_factory() -> SqlJobsUnitOfWork:
        return SqlJobsUnitOfWork(sessions)

    def posting_uow_factory() -> SqlJobsUnitOfWork:
        return SqlJobsUnitOfWork(posting_sessions)

    timeout = settings.rpc_timeout_seconds
    payments = PaymentsParticipant(settings.payments_target, timeout)
    wallet = CreditsParticipant(settings.wallet_target, timeout, settings.hold_expiry_seconds)
    sources = GrpcConsistencySources(
        payments,
        wallet,
        hold_grace_seconds=settings.audit_hold_grace_seconds,
        reconcile_limit=settings.audit_reconcile_limit,
        booking_grace_seconds=int(settings.audit_grace_seconds),
    )
    candidate_credits = WalletCandidateCredits(settings.wallet_target, timeout)
    accounts = WalletAccounts(settings.wallet_target, timeout)
    offer_funds = GrpcOfferFunds(CardOfferFunds(payments, accounts), CoinOfferFunds(accounts))
    escrow = WalletEscrowLedger(accounts)
    card_refunds = PaymentsCardRefunds(settings.payments_target, timeout)
    job_payments = PaymentsJobPayments(settings.payments_target, timeout)
    return Adapters(
        engine,
        uow_factory,
        payments,
        wallet,
        GrpcParticipants(payments, wallet),
        sources,
        candidate_credits,
        accounts,
        offer_funds,
        escrow,
        card_refunds,
        job_payments,
        posting_engine,
        posting_uow_factory,
    )


# Jobs serves the HTTP edge; the user behind each call is the gateway's signed actor assertion.
ACCESS = AccessPolicy.of({"gateway"})


def build_app(settings: JobsSettings, adapters: Adapters) -> GrpcApp:
    """Wire the servicer and the workers over the adapters."""
    app = GrpcApp("jobs", settings, ACCESS)
    config = settings.jobs_config()
    # One for the process: its requests note the postings they complete, its settlement
    # consumer judges their events by it (issue 13).
    completed = CompletedPostings()

    def make_deps(uow_factory: Callable[[], JobsUnitOfWork] = adapters.uow_factory) -> Deps:
        return Deps.build(
            uow_factory,
            config,
            adapters.participants,
            sources=adapters.sources,
            candidate_credits=adapters.candidate_credits,
            offer_funds=adapters.offer_funds,
            escrow=adapters.escrow,
            card_refunds=adapters.card_refunds,
            job_payments=adapters.job_payments,
            completed=completed,
        )

    posting_uows = adapters.posting_uow_factory
    posting_deps = functools.partial(make_deps, posting_uows) if posting_uows else None
    app.add_service(
        pb_grpc.add_JobsServiceServicer_to_server,
        JobsServicer(make_deps, posting_deps=posting_deps),
        SERVICE_NAME,
    )
    app.add_worker(workers.recovery_worker(make_deps, settings.recovery_interval_seconds))
    app.add_worker(workers.escrow_worker(make_deps, settings.recovery_interval_seconds))
    app.add_worker(workers.expiry_worker(make_deps, settings.expiry_interval_seconds))
    if settings.audit_interval_seconds > 0:
        app.add_worker(
            workers.auditor_worker(adapters.engine, make_deps, settings.audit_interval_seconds)
        )
    sender = _callback_sender(settings)
    if sender is not None:
        # Without subscribers the events stay recorded (and are sent once one is configured).
        app.add_worker(workers.notifier_worker(make_deps, sender, settings.notify_interval_seconds))
    app.add_worker(
        workers.settlement_worker(
            adapters.engine, make_deps, adapters.payments, settings.settlement_reconnect_seconds
        )
    )
    app.add_worker(
        workers.marketplace_settlement_worker(
            adapters.engine, make_deps, adapters.payments, settings.settlement_reconnect_seconds
        )
    )

    async def started() -> None:
        log.info("jobs settings: %s", describe(settings))

    async def stopped() -> None:
        await adapters.payments.close()
        await adapters.wallet.close()
        await adapters.candidate_credits.close()
        await adapters.accounts.close()
        await adapters.card_refunds.close()
        await adapters.job_payments.close()
        if adapters.posting_engine is not None:
            await adapters.posting_engine.dispose()
        await adapters.engine.dispose()

    app.on_startup(started)
    app.add_readiness_check("database", database_check(settings.database_url.get_secret_value()))
    app.on_shutdown(stopped)
    return app


def _callback_sender(settings: JobsSettings) -> CallbackSender | None:
    """The notifier's sender (None without subscribers); a bad JOBS_CALLBACK_URLS or a missing
    secret stops start-up."""
    secret = settings.callback_secret.get_secret_value()
    try:
        urls = parse_callback_urls(settings.callback_urls)
    except ValueError as exc:
        raise SystemExit(f"jobs: invalid JOBS_CALLBACK_URLS: {exc}") from None
    if urls and not secret:
        raise SystemExit("JOBS_CALLBACK_SECRET is required when JOBS_CALLBACK_URLS is set")
    if not urls:
        return None
    return CallbackSender(urls, secret, settings.callback_timeout_seconds)


def main() -> None:
    settings = load_settings(JobsSettings)
    # Before the engine exists: its SQL statements get spans only if tracing is set up first
    # (GrpcApp.run sets it up again, a no-op then).
    setup_tracing("jobs", settings.traces)
    build_app(settings, build_adapters(settings)).run()
