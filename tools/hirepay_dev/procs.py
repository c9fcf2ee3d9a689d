"""Start project processes for tests, `make run` and benchmarks, and wait until they are ready."""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hirepay_platform.grpccore import with_grpc_core_env
from hirepay_platform.identity import SECRET_ENV

REPO_ROOT = Path(__file__).resolve().parents[2]
LOG_DIR = REPO_ROOT / ".data" / "logs"
# How long a process may take to report ready. Generous because readiness returns as soon as it
# is reached: on a loaded 2-core machine (CI beside other work) a service importing its SDKs took
# over 30 s to start, and a restart that timed out left a whole test session without it.
READY_TIMEOUT = 120.0


def ensure_service_token_secret() -> str:
    """The secret every process of this run signs its gRPC calls with: the environment's
    HIREPAY_SERVICE_TOKEN_SECRET, else a random one generated once for this run (never a fixed
    value) and put in the environment, so every child process started from here shares it."""
    secret = os.environ.get(SECRET_ENV)
    if not secret:
        secret = secrets.token_urlsafe(48)
        os.environ[SECRET_ENV] = secret
    return secret


# Ports handed to servers started later come from below the kernel's ephemeral range: a port the
# kernel picks for bind(0) is one it also picks as the source port of an outgoing connection (the
# many connections to PostgreSQL, say), so between this check and the server's own bind such a
# connection could take it. grpc binds with SO_REUSEPORT, so a port handed out twice would not even
# fail: two servers would share it. Hence a process hands out each port of the range once before
# it hands out any again.
_PORT_SPAN = 12_000
_FALLBACK_RANGE = (32768, 60999)
_ports_lock = threading.Lock()
_port_candidates: list[int] = []


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return _FALLBACK_RANGE


def _listen_range() -> range:
    """Ports below the ephemeral range (above it when too little lies below)."""
    low, high = _ephemeral_range()
    if low - _PORT_SPAN >= 1024:
        return range(low - _PORT_SPAN, low)
    return range(high + 1, min(high + 1 + _PORT_SPAN, 65536))


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on loopback that nothing is bound to, outside the kernel's range for outgoing
    connections, and not handed out by this process since it last went through the range."""
    with _ports_lock:
        if not _port_candidates:
            candidates = list(_listen_range())
            random.SystemRandom().shuffle(candidates)
            _port_candidates.extend(candidates)
        while _port_candidates:
            port = _port_candidates.pop()
            if _bindable(port):
                return port
    raise OSError("no free TCP port left outside the ephemeral range")


def http_ready(url: str) -> Callable[[], bool]:
    """A readiness probe: GET url answers 2xx."""
    import httpx

    def probe() -> bool:
        try:
            return httpx.get(url, timeout=1.0).is_success
        except httpx.HTTPError:
            return False

    return probe


def grpc_ready(target: str, service: str = "") -> Callable[[], bool]:
    """A readiness probe: the standard gRPC health service answers SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    def probe() -> bool:
        try:
            with grpc.insecure_channel(target) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
                return reply.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False

    return probe


class StartCancelled(RuntimeError):
    """A start abandoned because a process started beside it failed."""


@dataclass
class Process:
    """A child process of the project, with its log file and how to tell it is ready."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    ready: Callable[[], bool] | None = None
    popen: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(
        self, timeout: float = READY_TIMEOUT, cancel: threading.Event | None = None
    ) -> Process:
        """Start the process and wait until it is ready; `cancel` (set when a process started
        beside this one failed) abandons the wait and kills it, so a failed start-up stops the
        others at once instead of after their own start-up."""
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{self.name}.log"
        ensure_service_token_secret()
        # gRPC's core reads its settings when a process first imports grpc: given here, to
        # every process of the project (grpccore.py).
        env = with_grpc_core_env({**os.environ, **self.env, "PYTHONUNBUFFERED": "1"})
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            list(self.argv),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            start_new_session=True,  # Ctrl-C in a terminal goes to us; we stop children ourselves
        )
        log.close()
        try:
            self.wait_ready(timeout, cancel)
        except BaseException:
            # Nobody else holds it (its own session): never leave it running, e.g. polling a
            # database its test already dropped.
            self.kill()
            raise
        return self

    def wait_ready(
        self, timeout: float = READY_TIMEOUT, cancel: threading.Event | None = None
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cancel is not None and cancel.is_set():
                raise StartCancelled(f"{self.name}: start-up abandoned (another start failed)")
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.popen.returncode}: {self.tail()}"
                )
            if self.ready is None or self.ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout}s: {self.tail()}")

    def tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (graceful shutdown), then SIGKILL if it does not exit in time."""
        if not self.running:
            return
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: a crash, for crash-recovery tests."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


def python_module(module: str, *args: str) -> list[str]:
    """argv that runs `python -m module args` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def restart_with_environment(module: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
    """Start this process again as `python -m module argv` with `env` as its environment, unless
    that is its environment already (then return). grpc reads its core settings (grpccore.py)
    once, when it is imported: a process that has imported it takes other ones only as a new
    process."""
    if dict(env) != dict(os.environ):
        os.execve(sys.executable, python_module(module, *argv), dict(env))
