"""`make run` (python -m hirepay_dev.stack) supervises its processes: a service killed with -9 is
restarted with a log line while the rest keeps running, the sandbox comes back remembering its
payments, and SIGTERM still stops everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from hirepay_dev.procs import REPO_ROOT, free_port, grpc_ready
from hirepay_dev.sandbox_client import stripe_client
from hirepay_dev.supervisor import Supervisor
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow
# stripe-python's HTTPXClient posts the form as `data=<str>`, which httpx deprecates; not ours.
_SDK_WARNING = "ignore:Use 'content=<...>' to upload raw bytes/text content.:DeprecationWarning"


def children(pid: int) -> dict[str, int]:
    """The direct child processes of `pid` by the module they run (`python -m <module>`)."""
    found: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"-m" in argv:
                found[argv[argv.index(b"-m") + 1].decode()] = int(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@dataclass
class RunningStack:
    process: subprocess.Popen[bytes]
    output: Path
    env: dict[str, str]

    def text(self) -> str:
        return self.output.read_text(errors="replace")


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[RunningStack]:
    ports = {
        name: str(free_port())
        for name in (
            "SANDBOX_PORT",
            # The other providers' sandboxes too, so a developer's own `make run` is no clash.
            "PAYPAL_SANDBOX_PORT",
            "RAZORPAY_SANDBOX_PORT",
            "FATORA_SANDBOX_PORT",
            "GATEWAY_PORT",
            "WALLET_GRPC_PORT",
            "WALLET_METRICS_PORT",
            "PAYMENTS_GRPC_PORT",
            "PAYMENTS_METRICS_PORT",
            "JOBS_GRPC_PORT",
            "JOBS_METRICS_PORT",
        )
    }
    env = {**ports, "SANDBOX_STATE_FILE": str(tmp_path / "sandbox-state.json")}
    output = tmp_path / "make-run.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "hirepay_dev.stack"],
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            cwd=REPO_ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack = RunningStack(process, output, env)
    try:
        eventually(
            lambda: "Hirepay is running" in stack.text() or process.poll() is not None,
            180,
            "make run starts",
        )
        assert process.poll() is None, stack.text()
        yield stack
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.mark.filterwarnings(_SDK_WARNING)
def test_a_killed_service_is_restarted_and_sigterm_stops_everything(
    make_run: RunningStack,
) -> None:
    env = make_run.env
    gateway = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
    wallet_target = f"127.0.0.1:{env['WALLET_GRPC_PORT']}"
    sandbox = f"http://127.0.0.1:{env['SANDBOX_PORT']}"
    eventually(lambda: httpx.get(f"{gateway}/readyz", timeout=5).status_code == 200, 60, "ready")

    sdk = stripe_client(sandbox, allow_sync=True)
    intent = sdk.v1.payment_intents.create(
        params={
            "amount": 14900,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "capture_method": "manual",
            "payment_method_types": ["card"],
        }
    )
    time.sleep(0.5)  # the sandbox writes its state within 0.1 s of a change

    first = children(make_run.process.pid)
    assert {"stripe_sandbox", "wallet", "payments", "jobs", "gateway"} <= set(first)

    os.kill(first["wallet"], signal.SIGKILL)
    eventually(lambda: "supervisor: wallet exited (code -9)" in make_run.text(), 30, "noticed")
    eventually(lambda: "supervisor: wallet restarted" in make_run.text(), 60, "restarted")
    assert make_run.process.poll() is None  # the stack was not torn down
    eventually(grpc_ready(wallet_target), 30, "wallet serving")
    after = children(make_run.process.pid)
    assert after["wallet"] != first["wallet"]
    for name in ("stripe_sandbox", "payments", "jobs", "gateway"):
        assert after[name] == first[name], f"{name} was restarted too"
    eventually(lambda: httpx.get(f"{gateway}/readyz", timeout=5).status_code == 200, 60, "ready")

    os.kill(after["stripe_sandbox"], signal.SIGKILL)
    eventually(lambda: "supervisor: sandbox restarted" in make_run.text(), 60, "sandbox back")
    again = sdk.v1.payment_intents.retrieve(intent.id)
    assert again.status == "requires_capture" and again.amount == 14900

    running = children(make_run.process.pid)
    make_run.process.send_signal(signal.SIGTERM)
    assert make_run.process.wait(90) == 0
    assert "stopped." in make_run.text()
    for name, pid in running.items():
        assert not alive(pid), f"{name} still running after SIGTERM"


def test_backoff_grows_for_a_crash_loop_and_resets_once_stable() -> None:
    """The restart delay doubles while a process keeps dying, capped, and is logged each time."""

    class Dead:
        name = "svc"
        popen = None
        log_path = Path("svc.log")
        running = False

        def start(self, timeout: float) -> None:
            raise RuntimeError("svc exited with 1: boom")

        def kill(self) -> None:
            pass

    lines: list[str] = []
    supervisor = Supervisor(
        {"svc": Dead()},  # type: ignore[dict-item]
        base_delay=1,
        max_delay=4,
        log=lines.append,
    )
    entry = supervisor.watched["svc"]
    supervisor.check(now=0)
    assert entry.restart_at == 1 and "svc exited" in lines[-1] and "restarting in 1s" in lines[-1]
    delays = []
    for _ in range(4):
        supervisor.check(now=entry.restart_at or 0)
        delays.append(lines[-1])
    assert [line.rsplit("retrying in ", 1)[1] for line in delays] == ["2s", "4s", "4s", "4s"]
    assert all("did not come back (svc exited with 1: boom)" in line for line in delays)
