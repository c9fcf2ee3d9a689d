"""CPU per call of one trivial unary RPC through the platform's gRPC plumbing, beside bare grpc.aio
(issue 13): what the server interceptor, the client wrapper (ServiceClient.call: token, trace
context, deadline, metrics) and the event loop add to each call, on each side.

    .venv/bin/python -m hirepay_dev.bench_rpc [--calls 20000] [--concurrency 16] [--only NAME]
        [--traced] [--same-process] [--grpc-core platform|grpc] [--json]

The server runs in a child process (GrpcApp.serve, as a service runs it, or a bare grpc.aio server)
and answers GetJob with an empty JobResponse; the client is this process. CPU is utime+stime of
each process over the measured calls (/proc), so the figures are per-call CPU, not latency; the
machine is shared, so repeat a run and compare cases of the same run. `--json` prints each case as
one JSON object per line instead of the table (`make bench` runs the bare case so). Beside it, the voluntary
context switches per call of each process (`wakeups`, all its threads: a thread that waited and
was woken), a count that moves far less with the machine's load. `--traced` makes every call
inside one W3C trace, as a service's calls are while it serves a request (the client sends the
trace context, the server continues it); without it the calls carry none and each begins a trace.
`--grpc-core` picks the settings of gRPC's core both processes run with: the platform's
(hirepay_platform.grpccore, as every service runs) or grpc's own defaults; the benchmark starts
itself again with them when its environment differs (grpc reads them at import).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from hirepay.jobs.v1 import jobs_service_pb2 as jobs_pb
from hirepay.jobs.v1 import jobs_service_pb2_grpc as jobs_grpc
from hirepay_dev.benchcpu import process_cpu
from hirepay_dev.procs import free_port, restart_with_environment
from hirepay_platform.grpccore import GRPC_CORE_ENV

SECRET = "bench-rpc-secret-0123456789abcdef0123456789"
# The caller's trace the calls of a --traced run are made in.
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class _Jobs(jobs_grpc.JobsServiceServicer):
    async def GetJob(self, request: Any, context: Any) -> Any:
        return jobs_pb.JobResponse()


def _serve(kind: str, port: int, loop_kind: str, ready: Any) -> None:
    """Child process: a platform (GrpcApp) or bare grpc.aio server until terminated."""
    from hirepay_platform import eventloop

    eventloop.run(_server(kind, port, ready), loop=loop_kind)


async def _server(kind: str, port: int, ready: Any) -> None:
    """A platform (GrpcApp) or bare grpc.aio server on `port`; `ready` set once it listens."""

    async def bare() -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        jobs_grpc.add_JobsServiceServicer_to_server(_Jobs(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        ready.set()
        await server.wait_for_termination()

    async def platform() -> None:
        from hirepay_platform.server import GrpcApp
        from hirepay_platform.settings import ServiceSettings

        settings = ServiceSettings(
            grpc_port=port,
            metrics_port=0,
            database_url="postgresql://unused",
            HIREPAY_SERVICE_TOKEN_SECRET=SECRET,
        )
        app = GrpcApp("jobs", settings)
        app.add_service(jobs_grpc.add_JobsServiceServicer_to_server, _Jobs(), "jobs")
        stop = asyncio.Event()
        task = asyncio.create_task(app.serve(stop))
        for _ in range(3000):  # the port is known once the server has started
            if app.port is not None:
                break
            await asyncio.sleep(0.01)
        ready.set()
        await task

    await (bare() if kind == "bare" else platform())


async def _drive(call: Callable[[], Awaitable[Any]], calls: int, concurrency: int) -> None:
    per_task = calls // concurrency

    async def worker() -> None:
        for _ in range(per_task):
            await call()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _self_switches() -> int:
    """Voluntary context switches (a thread waiting to be woken) of every thread of this
    process, exited ones too; the involuntary ones count the machine's load, not the call's."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw


def _process_switches(pid: int) -> int:
    """Voluntary context switches of the live threads of process `pid` (/proc/<pid>/task)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[-1])
    return total


async def _client_case(
    kind: str, port: int, calls: int, concurrency: int, *, traced: bool = False
) -> tuple[float, float, int]:
    """(client CPU seconds, wall seconds, context switches) of `calls` calls after a warm-up
    (`traced`: inside the caller's trace TRACEPARENT)."""
    from opentelemetry import context as otel_context

    from hirepay_platform import identity, tracing
    from hirepay_platform.client import ServiceClient, SigningInterceptor

    target = f"127.0.0.1:{port}"
    minter = identity.TokenMinter("gateway", SECRET)
    request = jobs_pb.GetJobRequest(job_id="job-0123456789")
    if kind == "platform":
        client = ServiceClient("jobs", target, minter=minter)
        stub = jobs_grpc.JobsServiceStub(client.channel)

        async def call() -> Any:
            return await client.call(stub.GetJob, request)

        close = client.close
    else:
        # A bare stub; it still signs (the platform server refuses an unsigned call), with the
        # token minted once, as a client that reuses it would.
        channel = grpc.aio.insecure_channel(target)
        stub = jobs_grpc.JobsServiceStub(channel)
        metadata = tuple(minter.metadata("jobs"))
        if traced:
            metadata += (("traceparent", TRACEPARENT),)
        if kind == "signing":
            channel = grpc.aio.insecure_channel(
                target, interceptors=[SigningInterceptor("jobs", minter)]
            )
            stub = jobs_grpc.JobsServiceStub(channel)
            metadata = (("traceparent", TRACEPARENT),) if traced else ()

        async def call() -> Any:
            return await stub.GetJob(request, timeout=5.0, metadata=metadata)

        close = channel.close
    # The platform client sends the context it runs in (tracing.outgoing_context).
    token = (
        otel_context.attach(tracing.incoming_context([("traceparent", TRACEPARENT)]))
        if traced
        else None
    )
    try:
        await _drive(call, 500, concurrency)
        cpu0, wall0, switches0 = _self_cpu(), time.perf_counter(), _self_switches()
        await _drive(call, calls, concurrency)
        cpu, wall = _self_cpu() - cpu0, time.perf_counter() - wall0
        switches = _self_switches() - switches0
    finally:
        if token is not None:
            otel_context.detach(token)
    await close()
    return cpu, wall, switches


def run_case(
    server: str, client: str, loop_kind: str, calls: int, concurrency: int, traced: bool = False
) -> dict[str, float]:
    """One server kind against one client kind; CPU microseconds per call on each side."""
    from hirepay_platform import eventloop

    port = free_port()
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    child = ctx.Process(target=_serve, args=(server, port, loop_kind, ready), daemon=True)
    child.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("server did not start")
        holder: dict[str, Any] = {}

        async def main() -> None:
            # Warm up, then read the server's CPU around the measured calls only.
            # A channel open throughout: closing the last one shuts grpc.aio down (its
            # completion-queue thread with it), and the next call would start it again.
            keep = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            holder["warm"] = await _client_case(client, port, 200, concurrency, traced=traced)
            pid: int = child.pid  # type: ignore[assignment]
            before, switches = process_cpu(pid), _process_switches(pid)
            holder["cpu"], holder["wall"], holder["switches"] = await _client_case(
                client, port, calls, concurrency, traced=traced
            )
            holder["server"] = process_cpu(pid) - before  # type: ignore[operator]
            holder["server_switches"] = _process_switches(pid) - switches
            await keep.close()

        eventloop.run(main(), loop=loop_kind)
    finally:
        child.terminate()
        child.join(5)
    done = (calls // concurrency) * concurrency
    return {
        "client_us": holder["cpu"] / done * 1e6,
        "server_us": holder["server"] / done * 1e6,
        "client_switches": holder["switches"] / done,
        "server_switches": holder["server_switches"] / done,
        "calls_per_s": done / holder["wall"],
    }


def same_process(
    server: str, client: str, loop_kind: str, calls: int, concurrency: int, traced: bool = False
) -> tuple[float, float]:
    """Server and client in this one process, one event loop: (CPU microseconds, Python function
    calls and calls into C functions) per round trip, both sides together. The calls are
    counted with sys.setprofile in a second pass: a count, not a time, it does not move with
    the load of a shared machine; the CPU of one process serving both sides is not confounded by
    how the two sides' loops batch their wake-ups either."""
    from hirepay_platform import eventloop

    counted = [0]

    def profiler(frame: Any, event: str, arg: Any) -> None:
        if event in ("call", "c_call"):
            counted[0] += 1

    result: dict[str, float] = {}

    async def main() -> None:
        ready = asyncio.Event()
        port = free_port()
        task = asyncio.create_task(_server(server, port, ready))
        await ready.wait()
        await _client_case(client, port, 200, concurrency, traced=traced)  # warm-up
        result["cpu"] = time.process_time()
        await _client_case(client, port, calls, concurrency, traced=traced)
        result["cpu"] = time.process_time() - result["cpu"]
        sys.setprofile(profiler)
        try:
            await _client_case(client, port, calls, concurrency, traced=traced)
        finally:
            sys.setprofile(None)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    eventloop.run(main(), loop=loop_kind)
    # _client_case makes 500 warm-up calls of its own before the `calls` it measures.
    done = (calls // concurrency) * concurrency
    return result["cpu"] / (done + 500) * 1e6, counted[0] / (done + 500)


CASES = {
    # name: (server, client)
    "bare": ("bare", "bare"),
    "platform-server": ("platform", "bare"),
    "platform-client": ("platform", "platform"),
    "signing-interceptor": ("platform", "signing"),
}


def _core_environment(core: str) -> dict[str, str]:
    """This process's environment with the gRPC core settings of `core`: the platform's
    (GRPC_CORE_ENV) or none of them (grpc's own defaults)."""
    env = {k: v for k, v in os.environ.items() if k not in GRPC_CORE_ENV}
    return {**env, **GRPC_CORE_ENV} if core == "platform" else env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--loop", choices=("asyncio", "uvloop", "default"), default="default")
    parser.add_argument("--only", choices=sorted(CASES), action="append")
    parser.add_argument("--same-process", action="store_true", help="see same_process")
    parser.add_argument(
        "--traced", action="store_true", help="every call inside one caller's W3C trace"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per case")
    parser.add_argument(
        "--grpc-core",
        choices=("platform", "grpc"),
        default="platform",
        help="gRPC core settings: the platform's (as services run) or grpc's defaults",
    )
    args = parser.parse_args()
    # grpc has read its settings at import: start again with them, server child included.
    restart_with_environment(
        "hirepay_dev.bench_rpc", sys.argv[1:], _core_environment(args.grpc_core)
    )
    os.environ.setdefault("HIREPAY_SERVICE_TOKEN_SECRET", SECRET)
    if args.same_process:
        print(f"{'case (one process)':<22}{'CPU us/RPC':>12}{'calls/RPC':>12}")
        for name in args.only or CASES:
            cpu, count = same_process(
                *CASES[name], args.loop, args.calls, args.concurrency, args.traced
            )
            print(f"{name:<22}{cpu:>12.1f}{count:>12.1f}")
        return
    if args.json:
        for name in args.only or CASES:
            result = run_case(*CASES[name], args.loop, args.calls, args.concurrency, args.traced)
            print(json.dumps({"case": name, "concurrency": args.concurrency, **result}))
        return
    print(f"gRPC core settings: {args.grpc_core}")
    print(
        f"{'case':<22}{'client us/call':>16}{'server us/call':>16}{'calls/s':>10}"
        f"{'client wakeups':>16}{'server wakeups':>16}"
    )
    for name in args.only or CASES:
        server, client = CASES[name]
        result = run_case(server, client, args.loop, args.calls, args.concurrency, args.traced)
        print(
            f"{name:<22}{result['client_us']:>16.1f}{result['server_us']:>16.1f}"
            f"{result['calls_per_s']:>10.0f}"
            f"{result['client_switches']:>16.2f}{result['server_switches']:>16.2f}"
        )


if __name__ == "__main__":
    main()
