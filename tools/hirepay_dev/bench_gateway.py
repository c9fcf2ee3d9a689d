"""CPU per posting of the gateway alone (issue 13): the real gateway process (`python -m gateway`,
as the stack runs it) in front of a stand-in jobs service (the platform's GrpcApp answering
CreateJobWithPayment at once with an active job), driven over HTTP at a given concurrency. What the
gateway spends per posting (HTTP parsing, middleware, validation, auth, the gRPC call, the answer)
and what the stand-in's platform plumbing spends per call, without the saga behind them.

With --webhooks: the same for the provider's webhook deliveries the gateway relays to payments (a
card posting brings two), in front of a stand-in payments service that acknowledges each at once.

    .venv/bin/python -m hirepay_dev.bench_gateway [--postings 3000] [--concurrency 32] [--webhooks]

Print the gateway's pid and wait (--pause) to attach py-spy before the measured requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import time
from typing import Any

import httpx

from gateway.service_layer.auth import issue_token
from hirepay.jobs.v1 import jobs_service_pb2 as jobs_pb
from hirepay.jobs.v1 import jobs_service_pb2_grpc as jobs_grpc
from hirepay.payments.v1 import payments_service_pb2 as pay_pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pay_grpc
from hirepay_dev.bench_posting import BODY
from hirepay_dev.bench_rpc import SECRET
from hirepay_dev.benchcpu import process_cpu
from hirepay_dev.procs import free_port
from hirepay_platform.grpccore import with_grpc_core_env


class _Jobs(jobs_grpc.JobsServiceServicer):
    """Every posting succeeds at once: an active job, the attempt allowed."""

    async def CreateJobWithPayment(self, request: Any, context: Any) -> Any:
        job = jobs_pb.Job(
            job_id="job-1",
            status=jobs_pb.Job.ACTIVE,
            fields=request.job,
            payment_id="pay-1",
            payment_method="card",
        )
        limit = request.rate_limit
        return jobs_pb.CreateJobWithPaymentResponse(
            job=job,
            payment_id="pay-1",
            payment_state="CAPTURED",
            saga_id="saga-1",
            rate_limit=jobs_pb.PostingRateDecision(
                allowed=True, limit=limit.limit, remaining=limit.limit - 1, reset_seconds=1
            ),
        )


class _Payments(pay_grpc.PaymentsServiceServicer):
    """Every delivery is acknowledged at once (verifying and applying it is payments' cost)."""

    async def HandleProviderEvent(self, request: Any, context: Any) -> Any:
        return pay_pb.HandleProviderEventResponse(event_id="evt_1", applied=True)


# A Stripe event as the sandbox delivers it (its size is what the gateway reads and checks).
_EVENT = json.dumps(
    {
        "id": "evt_1",
        "object": "event",
        "api_version": "2024-06-20",
        "created": 1768040700,
        "type": "payment_intent.succeeded",
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": "posting-1"},
        "data": {
            "object": {
                "id": "pi_1",
                "object": "payment_intent",
                "amount": 14900,
                "amount_received": 14900,
                "currency": "usd",
                "status": "succeeded",
                "capture_method": "manual",
                "latest_charge": "ch_1",
                "payment_method": "pm_card_visa",
                "metadata": {"hirepay_payment_id": "pay_1", "job_id": "job_1"},
            }
        },
    }
).encode()


def _serve(name: str, port: int, ready: Any) -> None:
    from hirepay_platform import eventloop
    from hirepay_platform.server import GrpcApp
    from hirepay_platform.settings import ServiceSettings

    async def main() -> None:
        settings = ServiceSettings(
            grpc_port=port,
            metrics_port=0,
            database_url="postgresql://unused",
            log_level="WARNING",
            HIREPAY_SERVICE_TOKEN_SECRET=SECRET,
        )
        app = GrpcApp(name, settings)
        if name == "jobs":
            app.add_service(
                jobs_grpc.add_JobsServiceServicer_to_server, _Jobs(), "hirepay.jobs.v1.JobsService"
            )
        else:
            app.add_service(
                pay_grpc.add_PaymentsServiceServicer_to_server,
                _Payments(),
                "hirepay.payments.v1.PaymentsService",
            )
        task = asyncio.create_task(app.serve())
        for _ in range(3000):  # the port is known once the server has started
            if app.port is not None:
                break
            await asyncio.sleep(0.01)
        ready.set()
        await task

    eventloop.run(main())


async def _load(url: str, postings: int, concurrency: int, tag: str, webhooks: bool) -> float:
    token = issue_token(user_id=f"bench-{tag}", role="company")
    per_worker = postings // concurrency

    async def worker(w: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            for i in range(per_worker):
                if webhooks:
                    response = await client.post(
                        "/api/payments/webhook/stripe",
                        content=_EVENT,
                        headers={
                            "Stripe-Signature": f"t={i},v1={'0' * 64}",
                            "Content-Type": "application/json; charset=utf-8",
                        },
                    )
                else:
                    response = await client.post(
                        "/api/jobs/create-with-payment",
                        json=BODY,
                        headers={
                            "Authorization": f"Bearer {token}",
                            "Idempotency-Key": f"{tag}-{w}-{i}",
                        },
                    )
                if response.status_code not in (200, 201):
                    raise RuntimeError(f"{response.status_code} {response.text[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postings", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--webhooks", action="store_true", help="relay webhook deliveries instead")
    args = parser.parse_args()
    # The gateway and the stand-in run with gRPC's core settings as services do (grpccore.py):
    # both start from this environment and import grpc afresh.
    os.environ.update(with_grpc_core_env(dict(os.environ)))
    stand_in_port, gw_port = free_port(), free_port()
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    # The stand-in the measured requests reach: jobs for postings, payments for webhooks.
    stand_in_name = "payments" if args.webhooks else "jobs"
    stand_in = ctx.Process(target=_serve, args=(stand_in_name, stand_in_port, ready), daemon=True)
    stand_in.start()
    env = {
        **os.environ,
        "HIREPAY_SERVICE_TOKEN_SECRET": SECRET,
        "GATEWAY_PORT": str(gw_port),
        f"GATEWAY_{stand_in_name.upper()}_TARGET": f"127.0.0.1:{stand_in_port}",
        "GATEWAY_LOG_LEVEL": "WARNING",
        "GATEWAY_RATE_LIMIT_PER_MINUTE": "100000",
    }
    gateway = subprocess.Popen([sys.executable, "-m", "gateway"], env=env)
    url = f"http://127.0.0.1:{gw_port}"
    try:
        ready.wait(30)
        for _ in range(300):
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        asyncio.run(_load(url, 200, args.concurrency, f"warm{time.time_ns()}", args.webhooks))
        print(f"gateway pid {gateway.pid}, {stand_in_name} stand-in pid {stand_in.pid}", flush=True)
        time.sleep(args.pause)
        for r in range(args.rounds):
            gw0, si0 = process_cpu(gateway.pid), process_cpu(stand_in.pid)  # type: ignore[arg-type]
            wall = asyncio.run(
                _load(url, args.postings, args.concurrency, f"r{r}-{time.time_ns()}", args.webhooks)
            )
            done = (args.postings // args.concurrency) * args.concurrency
            gw = (process_cpu(gateway.pid) - gw0) / done * 1000  # type: ignore[operator]
            si = (process_cpu(stand_in.pid) - si0) / done * 1000  # type: ignore[arg-type,operator]
            what, one = ("deliveries", "delivery") if args.webhooks else ("postings", "posting")
            print(
                f"c={args.concurrency} {done / wall:7.0f} {what}/s  gateway {gw:.2f} CPU-ms "
                f"{stand_in_name} stand-in {si:.2f} CPU-ms per {one}",
                flush=True,
            )
    finally:
        gateway.terminate()
        gateway.wait(10)
        stand_in.terminate()
        stand_in.join(5)


if __name__ == "__main__":
    main()
