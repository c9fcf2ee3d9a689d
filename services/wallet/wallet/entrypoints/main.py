"""The wallet process: settings, database, gRPC servicer and the hold-expiry worker on GrpcApp."""

from __future__ import annotations

import asyncio

from hirepay.wallet.v1 import wallet_service_pb2_grpc as pb_grpc
from hirepay_platform.clock import utc_now
from hirepay_platform.db import Database
from hirepay_platform.server import GrpcApp
from hirepay_platform.settings import load_settings
from wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from wallet.entrypoints.servicer import SERVICE_NAME, WalletServicer
from wallet.entrypoints.settings import WalletSettings
from wallet.entrypoints.workers import run_hold_expiry
from wallet.service_layer.config import WalletConfig
from wallet.service_layer.deps import Deps


def wallet_config(settings: WalletSettings) -> WalletConfig:
    """The use cases' configuration from the process settings."""
    return WalletConfig(
        hold_expiry_interval_seconds=settings.hold_expiry_interval_seconds,
        hold_expiry_batch_size=settings.hold_expiry_batch_size,
    )


def build_app(settings: WalletSettings) -> GrpcApp:
    app = GrpcApp("wallet", settings)
    database = Database.from_settings(settings, SqlWalletUnitOfWork, probe_table="accounts")
    app.on_startup(database.start)
    app.add_readiness_check("database", database.readiness_check())
    app.on_shutdown(database.stop)
    deps = Deps(uow=database.uow, config=wallet_config(settings), clock=utc_now)
    app.add_service(pb_grpc.add_WalletServiceServicer_to_server, WalletServicer(deps), SERVICE_NAME)

    async def expiry_worker(stop: asyncio.Event) -> None:
        await run_hold_expiry(deps, stop)

    app.add_worker(expiry_worker)
    return app


def main() -> None:
    build_app(load_settings(WalletSettings)).run()
