"""The system stack (`make run`, the e2e tests, the benchmarks) starts its parts side by side, and a
failed start stops the others: nothing is left running, and a start still waiting for readiness is
abandoned at once rather than after its own timeout. Payments starts beside the wallet, not after
it, and what it owes the wallet meanwhile is booked once the wallet is up."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from hirepay_dev.procs import Process
from hirepay_dev.sandbox_client import SandboxAdmin
from hirepay_dev.stack import Ports, Stack, start_in_order
from tests.support import gated_wallet
from tests.support.databases import SessionDatabases
from tests.support.payments_helpers import authorize_request, branch
from tests.support.service_auth import signed_aio_channel
from tests.support.stripe_stack import payments_stub_as_jobs
from tests.support.waiting import eventually, wait_for

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
    pg_server_url: str, test_databases: SessionDatabases
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
    test_databases.add(*stack.database_names())
    with pytest.raises(RuntimeError, match="payments"):
        stack.start()
    assert "jobs" not in stack.services and stack.gateway is None
    assert not any(p.running for p in stack.processes().values())
    assert children() <= before


async def test_payments_starts_before_the_wallet_and_books_on_it_once_it_is_up(
    pg_server_url: str, tmp_path: Path, test_databases: SessionDatabases
) -> None:
    """Payments does not wait for the wallet: it is serving while the wallet is still held at its
    gate, a payment captured then owes the wallet its booking, and once the wallet is up the
    booking is on it (payments' wallet channel opens on first use; its booking worker retries)."""
    gate = tmp_path / "wallet-may-start"
    stack = Stack(
        server_url=pg_server_url,
        ports=Ports.free(),
        db_suffix=f"_late_{uuid.uuid4().hex[:6]}",
        fresh=True,
        modules={"wallet": gated_wallet.MODULE},
        extra_env={"wallet": {gated_wallet.GATE: str(gate)}},
        start_timeout=120.0,
    )
    test_databases.add(*stack.database_names())
    failures: list[BaseException] = []

    def start() -> None:
        try:
            stack.start()
        except BaseException as exc:
            failures.append(exc)

    starting = threading.Thread(target=start)
    starting.start()
    try:
        await asyncio.to_thread(
            eventually, lambda: "payments" in stack.services or failures, 120.0, "payments ready"
        )
        assert not failures
        assert "wallet" not in stack.services  # still held at its gate
        admin = SandboxAdmin(stack.sandbox_url)
        try:
            await asyncio.to_thread(eventually, admin.healthy, 60.0, "the sandbox")
        finally:
            admin.close()
        async with payments_stub_as_jobs(stack.services["payments"]) as payments:
            gtx = f"gtx-{uuid.uuid4().hex[:12]}"
            payment = (await payments.Authorize(authorize_request(gtx))).payment
            await payments.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
        gate.touch()
        await asyncio.to_thread(starting.join)
        assert not failures
        wallet = stack.services["wallet"]
        async with signed_aio_channel(wallet.target, caller="payments", service="wallet") as ch:
            stub = wpb_grpc.WalletServiceStub(ch)
            transfer_id = f"payment:{payment.payment_id}:capture"

            async def booked() -> wpb.TransferRecord | None:
                try:
                    request = wpb.GetTransferRequest(transfer_id=transfer_id)
                    return (await stub.GetTransfer(request)).transfer
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
                    return None

            transfer = await wait_for(booked, timeout=60.0)
            # The card's capture, once: provider clearing -> platform revenue.
            assert sorted(e.amount.amount_minor for e in transfer.entries) == [-2500, 2500]
    finally:
        gate.touch()
        await asyncio.to_thread(starting.join)
        stack.stop()
