"""The system stack (`make run`, the e2e tests, the benchmarks) starts its parts side by side, and a
failed start stops the others: nothing is left running, and a start still waiting for readiness is
abandoned at once rather than after its own timeout."""

from __future__ import annotations

import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from hirepay_dev.procs import Process
from hirepay_dev.stack import Ports, Stack, start_in_order

pytestmark = pytest.mark.slow


def children() -> set[int]:
    """This process's live child processes (over all its threads: starts run in worker threads)."""
    found: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            pids = (task / "children").read_text().split()
        except OSError:
            continue
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
            except (OSError, IndexError):
                continue
            if state != "Z":
                found.add(int(pid))
    return found


def test_a_failed_start_abandons_a_start_still_waiting_and_kills_its_process() -> None:
    never_ready = Process(
        name="never-ready",
        argv=[sys.executable, "-c", "import time; time.sleep(600)"],
        ready=lambda: False,
    )

    def fail(_cancel: threading.Event) -> None:
        time.sleep(1.0)  # the other start is waiting for readiness by then
        raise RuntimeError("boom")

    before = children()
    began = time.monotonic()
    with pytest.raises(RuntimeError, match="boom"):
        start_in_order(
            {
                "slow": (lambda cancel: never_ready.start(120.0, cancel), ()),
                "failing": (fail, ()),
                "after": (lambda _cancel: pytest.fail("started after a failed need"), ("failing",)),
            }
        )
    assert time.monotonic() - began < 30.0  # not the 120 s readiness timeout
    assert not never_ready.running
    assert children() <= before


def test_a_service_that_fails_to_start_leaves_nothing_of_the_stack_running(
    pg_server_url: str,
) -> None:
    before = children()
    stack = Stack(
        server_url=pg_server_url,
        ports=Ports.free(),
        db_suffix=f"_fail_{uuid.uuid4().hex[:6]}",
        fresh=True,
        # payments exits at once: the sandboxes and the wallet started beside it are stopped,
        # jobs and the gateway (which need it) never start.
        modules={"payments": "hirepay_no_such_module"},
        start_timeout=120.0,
    )
    with pytest.raises(RuntimeError, match="payments"):
        stack.start()
    assert "jobs" not in stack.services and stack.gateway is None
    assert not any(p.running for p in stack.processes().values())
    assert children() <= before
