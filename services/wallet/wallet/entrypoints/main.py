"""The wallet process: settings, database, gRPC servicer and the hold-expiry worker on GrpcApp."""

from __future__ import annotations

import asyncio
import gc

from hirepay.wallet.v1 import wallet_service_pb2_grpc as pb_grpc
from hirepay_platform.clock import utc_now
from hirepay_platform.db import Database
from hirepay_platform.identity import AccessPolicy
from hirepay_platform.server import GrpcApp
from hirepay_platform.settings import load_settings
from wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from wallet.entrypoints.servicer import SERVICE_NAME, WalletServicer
from wallet.entrypoints.settings import WalletSettings
from wallet.entrypoints.workers import run_hold_expiry
from wallet.service_layer.batcher import HoldBatchers, TransferBatcher
from wallet.service_layer.config import WalletConfig
from wallet.service_layer.deps import Deps


def wallet_config(settings: WalletSettings) -> WalletConfig:
    """The use cases' configuration from the process settings."""
    return WalletConfig(
        hold_expiry_interval_seconds=settings.hold_expiry_interval_seconds,
        hold_expiry_batch_size=settings.hold_expiry_batch_size,
        transfer_batch_max_items=settings.transfer_batch_max_items,
        transfer_batch_window_seconds=settings.transfer_batch_window_ms / 1000,
        transfer_batches_in_flight=settings.transfer_batches_in_flight,
        hold_batch_max_items=settings.hold_batch_max_items,
    )


# The ledger is internal: only jobs and payments move money. The gateway may call the reads of
# users' wallets and the admin reports (ESC-11), whose object rules are in service_layer/access.py.
# AuditLedger is the consistency auditor's (a jobs worker) only.
READS = (
    "GetWalletSummary",
    "ListWalletTransactions",
    "GetCommissionEarnings",
    "ListBalances",
    "ListTransactions",
)
ACCESS = AccessPolicy.of(
    {"jobs", "payments"},
    {"AuditLedger": {"jobs"}, **{name: {"gateway", "jobs", "payments"} for name in READS}},
)


def build_app(settings: WalletSettings) -> GrpcApp:
    app = GrpcApp("wallet", settings, ACCESS)
    database = Database.from_settings(settings, SqlWalletUnitOfWork, probe_table="accounts")
    app.on_startup(database.start)
    app.add_readiness_check("database", database.readiness_check())
    app.on_shutdown(database.stop)
    config = wallet_config(settings)
    deps = Deps(uow=database.uow, config=config, clock=utc_now)
    batcher = None
    if config.transfer_batch_max_items > 1:
        batcher = TransferBatcher(
            deps,
            max_items=config.transfer_batch_max_items,
            window_seconds=config.transfer_batch_window_seconds,
            max_in_flight=config.transfer_batches_in_flight,
        )
    holds = None
    if config.hold_batch_max_items > 1:
        holds = HoldBatchers(
            deps,
            max_items=config.hold_batch_max_items,
            window_seconds=config.transfer_batch_window_seconds,
            max_in_flight=config.transfer_batches_in_flight,
        )
    servicer = WalletServicer(deps, batcher, holds)
    app.add_service(pb_grpc.add_WalletServiceServicer_to_server, servicer, SERVICE_NAME)

    async def expiry_worker(stop: asyncio.Event) -> None:
        await run_hold_expiry(deps, stop)

    app.add_worker(expiry_worker)
    return app


# Tracked objects allocated (net) before a young-generation collection: ten times Python's 700.
# Under the wallet bench (c=32 transfers) a young collection cost ~0.3 CPU-ms and came every ~20
# calls, a full one (walking ~100,000 start-up objects) ~65 CPU-ms every few thousand: together
# 4-6% of the wallet's CPU per call. With start-up frozen and this threshold, GC is ~0.003 CPU-ms
# per call (issue 13). Requests make few reference cycles (refcounting frees the rest): what they
# do make waits a few thousand allocations longer.
GC_YOUNG_THRESHOLD = 7000


def settle_gc() -> None:
    """What start-up built (modules, protobuf descriptors, tables, compiled statements) lives as
    long as the process: frozen out of the collector's sight, as in payments, so that a full
    collection walks only what calls made; and young collections ten times rarer."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def main() -> None:
    app = build_app(load_settings(WalletSettings))
    settle_gc()
    app.run()
