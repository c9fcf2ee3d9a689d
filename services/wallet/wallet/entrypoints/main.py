"""The wallet process: settings, database, gRPC servicer and the hold-expiry worker on GrpcApp."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hirepay.wallet.v1 import wallet_service_pb2_grpc as pb_grpc
from hirepay_platform.db import create_engine, make_session_factory
from hirepay_platform.server import GrpcApp
from hirepay_platform.settings import load_settings
from wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from wallet.entrypoints.expiry_worker import run_hold_expiry
from wallet.entrypoints.grpc_servicer import SERVICE_NAME, WalletServicer
from wallet.entrypoints.settings import WalletSettings


class Database:
    """The engine and session factory, built at start-up (never at import) and disposed at exit."""

    def __init__(self, settings: WalletSettings) -> None:
        self._settings = settings
        self.engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None

    async def start(self) -> None:
        s = self._settings
        self.engine = create_engine(
            s.database_url.get_secret_value(),
            pool_size=s.db_pool_size,
            max_overflow=s.db_max_overflow,
        )
        self._sessions = make_session_factory(self.engine)
        # Fail fast: a wallet that cannot reach its database must not report SERVING.
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1 FROM accounts LIMIT 1"))

    async def stop(self) -> None:
        if self.engine is not None:
            await self.engine.dispose()

    def uow(self) -> SqlWalletUnitOfWork:
        if self._sessions is None:
            raise RuntimeError("database not started")
        return SqlWalletUnitOfWork(self._sessions)


def build_app(settings: WalletSettings) -> GrpcApp:
    app = GrpcApp("wallet", settings)
    database = Database(settings)
    app.on_startup(database.start)
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
