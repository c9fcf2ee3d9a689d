"""How to start each Hirepay process (used by `make run`, the tests and the benchmarks)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from hirepay_dev import pg
from hirepay_dev.procs import (
    READY_TIMEOUT,
    REPO_ROOT,
    Process,
    free_port,
    grpc_ready,
    python_module,
)
from hirepay_platform.migrations import upgrade


@dataclass(frozen=True)
class ServiceSpec:
    """A gRPC service of the system: its module, settings prefix and migrations."""

    name: str
    module: str
    env_prefix: str
    grpc_service: str

    @property
    def migrations(self) -> Path:
        return REPO_ROOT / "services" / self.name / "migrations"

    @property
    def database(self) -> str:
        return f"hirepay_{self.name}"


WALLET = ServiceSpec("wallet", "wallet", "WALLET_", "hirepay.wallet.v1.WalletService")
PAYMENTS = ServiceSpec("payments", "payments", "PAYMENTS_", "hirepay.payments.v1.PaymentsService")
JOBS = ServiceSpec("jobs", "jobs", "JOBS_", "hirepay.jobs.v1.JobsService")
SPECS = {spec.name: spec for spec in (WALLET, PAYMENTS, JOBS)}


@dataclass
class RunningService:
    """A started service process and where it listens."""

    spec: ServiceSpec
    process: Process
    grpc_port: int
    metrics_port: int
    database_url: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        self.process.kill()

    def restart(self, timeout: float = READY_TIMEOUT) -> None:
        """Start the same process again on the same ports and database (after a stop or a crash)."""
        self.process.stop()
        self.process.popen = None
        self.process.start(timeout)


def prepare_database(
    spec: ServiceSpec, server_url: str, *, name: str | None = None, fresh: bool = False
) -> str:
    """Create the service's database (if missing) and migrate it to head; return its URL."""
    url = pg.create_database(server_url, name or spec.database, drop_existing=fresh)
    upgrade(spec.migrations, url)
    return url


def start_service(
    spec: ServiceSpec,
    database_url: str,
    *,
    env: dict[str, str] | None = None,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    log_name: str | None = None,
    timeout: float = READY_TIMEOUT,
    module: str | None = None,
    cancel: threading.Event | None = None,
) -> RunningService:
    """Start the service as a real process and wait until its gRPC health says SERVING.

    `module` runs another entry module instead of the service's own (tests start the real service
    with faults injected into its ports this way); `cancel` abandons the start (Process.start)."""
    grpc_port = grpc_port or free_port()
    metrics_port = metrics_port or free_port()
    p = spec.env_prefix
    full_env = {
        f"{p}DATABASE_URL": database_url,
        f"{p}GRPC_PORT": str(grpc_port),
        f"{p}METRICS_PORT": str(metrics_port),
        **(env or {}),
    }
    process = Process(
        name=log_name or spec.name,
        argv=python_module(module or spec.module),
        env=full_env,
        ready=grpc_ready(f"127.0.0.1:{grpc_port}"),
    ).start(timeout, cancel)
    return RunningService(spec, process, grpc_port, metrics_port, database_url, full_env)
