"""The jobs service process: settings, database, participants' clients, servicer and workers."""

from __future__ import annotations

import logging

from hirepay.jobs.v1 import jobs_service_pb2_grpc as pb_grpc
from hirepay_platform.db import create_engine, database_check, make_session_factory
from hirepay_platform.server import GrpcApp
from hirepay_platform.settings import load_settings
from jobs.adapters.participants import CreditsParticipant, GrpcParticipants, PaymentsParticipant
from jobs.adapters.unit_of_work import SqlJobsUnitOfWork
from jobs.entrypoints import workers
from jobs.entrypoints.servicer import JobsServicer
from jobs.service_layer.saga import SagaDeps
from jobs.settings import JobsSettings, describe

log = logging.getLogger(__name__)

SERVICE_NAME = "hirepay.jobs.v1.JobsService"


def build_app(settings: JobsSettings) -> GrpcApp:
    """Wire the service; the engine and clients are created here, at start-up, never at import."""
    app = GrpcApp("jobs", settings)
    config = settings.jobs_config()
    engine = create_engine(
        settings.database_url.get_secret_value(),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )
    sessions = make_session_factory(engine)

    def uow_factory() -> SqlJobsUnitOfWork:
        return SqlJobsUnitOfWork(sessions)

    timeout = settings.rpc_timeout_seconds
    payments = PaymentsParticipant(settings.payments_target, timeout)
    wallet = CreditsParticipant(settings.wallet_target, timeout, settings.hold_expiry_seconds)
    participants = GrpcParticipants(payments, wallet)
    deps = SagaDeps(participants=participants, config=config)
    app.add_service(
        pb_grpc.add_JobsServiceServicer_to_server, JobsServicer(uow_factory, deps), SERVICE_NAME
    )
    app.add_worker(workers.recovery_worker(uow_factory, deps, settings.recovery_interval_seconds))
    app.add_worker(workers.expiry_worker(uow_factory, settings.expiry_interval_seconds))
    app.add_worker(
        workers.settlement_worker(
            engine, uow_factory, deps, payments, settings.settlement_reconnect_seconds
        )
    )

    async def started() -> None:
        log.info("jobs settings: %s", describe(settings))

    async def stopped() -> None:
        await payments.close()
        await wallet.close()
        await engine.dispose()

    app.on_startup(started)
    app.add_readiness_check("database", database_check(settings.database_url.get_secret_value()))
    app.on_shutdown(stopped)
    return app


def main() -> None:
    build_app(load_settings(JobsSettings)).run()
