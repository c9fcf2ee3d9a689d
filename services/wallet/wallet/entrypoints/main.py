"""The wallet process: settings, database, gRPC servicer and the hold-expiry worker on GrpcApp."""

from __future__ import annotations

import asyncio

from hirepay.wallet.v1 import wallet_service_pb2_grpc as pb_grpc
from hirepay_platform.db import Database
from hirepay_platform.server import GrpcApp
from hirepay_platform.settings import load_settings
from wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from wallet.entrypoints.expiry_worker import run_hold_expiry
from wallet.entrypoints.grpc_servicer import SERVICE_NAME, WalletServicer
from wallet.entrypoints.settings import WalletSettings


def build_app(settings: WalletSettings) -> GrpcApp:
    app = GrpcApp("wallet", settings)
    database = Database.from_settings(settings, SqlWalletUnitOfWork, probe_table="accounts")
    app.on_startup(database.start)
    app.add_readiness_check("database", database.readiness_check())
    app.on_shutdown(database.stop)
    app.add_service(
        pb_grpc.add_WalletServiceServicer_to_server, WalletServicer(database.uow), SERVICE_NAME
    )

    async def expiry_worker(stop: asyncio.Event) -> None:
        await run_hold_expiry(
            database.uow,
            stop,
            interval=settings.hold_expiry_interval_seconds,
            batch_size=settings.hold_expiry_batch_size,
        )

    app.add_worker(expiry_worker)
    return app


def main() -> None:
    build_app(load_settings(WalletSettings)).run()
