"""Pay-to-post benchmark: postings per second, p50/p99 latency and CPU per posting of each process
through the gateway (HTTP) with every process real (sandbox, wallet, payments, jobs), at
concurrency 1, 8 and 32; then the same at concurrency 128 with 300 ms added to every provider call
(the Stripe sandbox's latency fault), beside the zero-latency c=32 throughput: with that latency
every provider call of 128 postings is in flight at once, so whatever caps concurrency below that
(pools, semaphores, threads, leases) shows as lost throughput; then the latency budget of one
posting by hop, from the traces."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from gateway.service_layer.auth import issue_token
from hirepay_dev import bench_wallet
from hirepay_dev.benchcpu import CpuMeter
from hirepay_dev.benchhttp import PostingClient
from hirepay_dev.benchlib import PGBENCH_DATABASE, Result, closed_loop, quiet_server
from hirepay_dev.benchtargets import LATENCY_SHARE_OF_C32, POSTING, POSTING_LATENCY
from hirepay_dev.benchtrace import budget, budget_line, read_spans
from hirepay_dev.sandbox_client import SandboxAdmin
from hirepay_dev.stack import Ports, Stack

CONCURRENCY = (1, 8, 32)
SECONDS = 15.0
QUICK_CONCURRENCY = (1, 8, 32)
QUICK_SECONDS = 5.0
# The latency case: this much added to every call to the provider, at this concurrency, for this
# long (a posting then takes seconds: a longer run keeps the start and the drain from dominating).
PROVIDER_LATENCY_MS = 300
LATENCY_CONCURRENCY = 128
LATENCY_SECONDS = 20.0
QUICK_LATENCY_SECONDS = 8.0
# How often a case's drain looks at the sandbox's webhook backlog, and how long it waits at most
# for the backlog to empty (a webhook the stack keeps refusing is a failed run, not a slow one).
DRAIN_POLL_SECONDS = 0.05
DRAIN_MAX_SECONDS = 120.0


def _stack(pg_url: str, traces: Path | None = None) -> Stack:
    env = {
        name: {f"{prefix}_LOG_LEVEL": "WARNING"}
        for name, prefix in (("wallet", "WALLET"), ("payments", "PAYMENTS"), ("jobs", "JOBS"))
    }
    env["gateway"] = {"GATEWAY_RATE_LIMIT_PER_MINUTE": "100000", "GATEWAY_LOG_LEVEL": "WARNING"}
    env["sandbox"] = {"SANDBOX_LOG_LEVEL": "WARNING"}
    if traces is not None:  # every process appends its spans to the one file, SQL statements too
        for values in env.values():
            values["HIREPAY_TRACES"] = f"file:{traces}"
            values["HIREPAY_TRACE_SQL"] = "true"
    return Stack(
        pg_url, Ports.free(), db_suffix="_bench", fresh=True, extra_env=env, start_timeout=120.0
    )


def _meter(pg_url: str, stack: Stack) -> CpuMeter:
    """CPU of every process of the stack and of the PostgreSQL backends of each service's database."""
    processes: dict[str, int] = {}
    for name, process in (("gateway", stack.gateway), ("sandbox", stack.sandbox)):
        if process is not None and process.popen is not None:
            processes[name] = process.popen.pid
    databases: dict[str, str] = {}
    for name, service in stack.services.items():
        if service.process.popen is not None:
            processes[name] = service.process.popen.pid
        databases[urlparse(service.database_url).path.lstrip("/")] = name
    return CpuMeter(pg_url, processes, databases)


BODY = {
    "job": {
        "title": "Benchmark engineer",
        "description": "Measures how fast a paid job goes live, end to end.",
        "location": "Remote",
        "employment_type": "full_time",
        "category": "engineering",
    },
    "payment": {"method": "card", "payment_method": "pm_card_visa"},
    "accept_terms": True,
}


_PATH = "/api/jobs/create-with-payment"
BODY_BYTES = json.dumps(BODY, separators=(",", ":")).encode()


def posters(
    clients: list[PostingClient],
) -> Callable[[], Callable[[int, int], Awaitable[None]]]:
    """`new_case()` -> `op(worker, i)`: one paid posting by card of the worker's company, sent
    on the worker's own connection and checked to be answered 201, active and NEW. Each case
    gets keys of its own: `i` starts at 0 in every case, and a key used by an earlier case would
    be answered as an idempotent replay (no saga, no provider call) and flatter the case. The
    request's bytes are the worker's template of the case with `i` formatted in (its key)."""
    run_id = uuid.uuid4().hex[:6]
    tokens = [
        issue_token(user_id=f"bench-{run_id}-{w}", role="company") for w in range(len(clients))
    ]

    def new_case() -> Callable[[int, int], Awaitable[None]]:
        case = uuid.uuid4().hex[:6]
        requests = [
            client.numbered(
                "POST",
                _PATH,
                {
                    "Authorization": f"Bearer {tokens[w]}",
                    "Content-Type": "application/json",
                    "Idempotency-Key": f"{run_id}-{case}-{w}-",
                },
                BODY_BYTES,
            )
            for w, client in enumerate(clients)
        ]
        sends = [client.send for client in clients]

        async def post_job(worker: int, i: int) -> None:
            answer = await sends[worker](requests[worker] % i)
            if (
                answer.status != 201
                or json.loads(answer.body.decode())["job"]["status"] != "active"
            ):
                raise RuntimeError(f"posting failed: {answer.status} {answer.body[:200]!r}")
            if answer.replayed:
                raise RuntimeError("a replayed answer, not a posting: keys must be new")

        return post_job

    return new_case


@contextlib.contextmanager
def posting_clients(url: str, workers: int) -> Iterator[list[PostingClient]]:
    """The load generator's HTTP clients of the gateway at `url`: one per worker, each with its
    one keep-alive connection, so that it never queues the postings it measures itself, and its
    own cost stays flat with the concurrency (with one shared httpx pool of 128 connections the
    generator cost 7.4 CPU-ms per posting at c=128 against 1.3 at c=32: httpcore looks through
    its pool on every request, and the generator shares the two cores with what it measures).
    The client is the bench's own (benchhttp): httpx's cost ~3,070 Python calls per posting."""
    clients = [PostingClient(url) for _ in range(workers)]
    try:
        yield clients
    finally:
        for client in clients:
            client.close()


async def run(
    pg_url: str,
    out: Callable[[str], None],
    baseline: float | None,
    *,
    quick: bool = False,
    latency_only: bool = False,
) -> dict[str, Any]:
    """Start the whole system on fresh databases, post paid jobs by card, print and return figures
    (throughput, latency, CPU per posting of each process); then, on a second traced stack, the
    latency budget of one posting by hop. `latency_only` (`--only latency`): the latency case and
    the zero-latency case it is compared with, nothing else."""
    levels = QUICK_CONCURRENCY if quick else CONCURRENCY
    if latency_only:
        levels = levels[-1:]
    seconds = QUICK_SECONDS if quick else SECONDS
    # The same start whether the wallet cases ran before (`make bench`) or not (`--only
    # posting`): in the full run the serial case measured a p50 of 35.8 ms against 21-27 ms
    # alone, in the wake of the wallet cases (see quiet_server).
    quieted = await quiet_server(pg_url, (PGBENCH_DATABASE, bench_wallet.DATABASE))
    out(f"before pay-to-post, the earlier cases' databases:\n{quieted.line()}")
    stack = await asyncio.to_thread(lambda: _stack(pg_url).start())
    results: list[Result] = []
    admin = SandboxAdmin(stack.sandbox_url)
    try:
        with posting_clients(stack.gateway_url, max(*levels, LATENCY_CONCURRENCY)) as clients:
            new_case = posters(clients)
            # Every case waits for its postings' webhooks: their time and CPU are the case's.
            drain = webhooks_delivered(admin)
            for concurrency in levels:
                result = await closed_loop(
                    POSTING,
                    new_case(),
                    concurrency=concurrency,
                    seconds=seconds,
                    meter=_meter(pg_url, stack),
                    drain=drain,
                )
                results.append(result)
                out(result.line(baseline))
            slow = await _with_provider_latency(
                stack,
                closed_loop(
                    POSTING_LATENCY,
                    new_case(),
                    concurrency=LATENCY_CONCURRENCY,
                    seconds=QUICK_LATENCY_SECONDS if quick else LATENCY_SECONDS,
                    warmup=2,
                    meter=_meter(pg_url, stack),
                    drain=drain,
                ),
            )
            out(slow.line(baseline))
            out(_latency_line(slow, results[-1]))
    finally:
        admin.close()
        await asyncio.to_thread(stack.stop)
    report: dict[str, Any] = {
        "quieted": asdict(quieted),
        "cases": [{**asdict(r), "per_second": r.per_second} for r in (*results, slow)],
        "latency_case": {
            "provider_latency_ms": PROVIDER_LATENCY_MS,
            "concurrency": LATENCY_CONCURRENCY,
            "compared_with_concurrency": results[-1].concurrency,
            "ratio": _ratio(slow, results[-1]),
        },
    }
    if not latency_only:
        hops = await latency_budget(pg_url, postings=10 if quick else 30)
        out(budget_line(hops))
        report["latency_budget_ms"] = hops
    return report


async def _with_provider_latency(stack: Stack, case: Awaitable[Result]) -> Result:
    """Run `case` with PROVIDER_LATENCY_MS added to every API call the Stripe sandbox answers
    (its `latency` fault, as the e2e tests arm it), cleared afterwards."""
    admin = SandboxAdmin(stack.sandbox_url)
    try:
        await asyncio.to_thread(admin.add_fault, "latency", ms=PROVIDER_LATENCY_MS)
        try:
            return await case
        finally:
            await asyncio.to_thread(admin.clear_faults)
    finally:
        admin.close()


def webhooks_delivered(
    admin: SandboxAdmin,
    *,
    poll_seconds: float = DRAIN_POLL_SECONDS,
    max_seconds: float = DRAIN_MAX_SECONDS,
) -> Callable[[], Awaitable[None]]:
    """A pay-to-post case's drain (closed_loop): wait until the Stripe sandbox has no webhook
    left to deliver (none `pending`: in flight or waiting for a retry). Each posting makes two
    events (payment_intent.amount_capturable_updated, .succeeded) that the sandbox delivers after
    the posting was answered, at most 8 at a time as its dispatcher does; at c=32 they lagged
    (0.78 of each delivered in the case's 12 s, the rest in the next case), so a case's
    postings are charged with their webhooks only when it waits for them."""

    async def drain() -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + max_seconds
        while (pending := (await asyncio.to_thread(admin.webhook_backlog)).get("pending", 0)) > 0:
            if loop.time() >= give_up:
                raise RuntimeError(
                    f"{pending} webhooks still undelivered after {max_seconds:.0f} s of waiting"
                )
            await asyncio.sleep(poll_seconds)

    return drain


def _ratio(slow: Result, fast: Result) -> float:
    return slow.per_second / fast.per_second if fast.per_second else 0.0


def _latency_line(slow: Result, fast: Result) -> str:
    return (
        f"    {PROVIDER_LATENCY_MS} ms on every provider call, c={slow.concurrency}: "
        f"{_ratio(slow, fast):.2f} x the zero-latency c={fast.concurrency} throughput "
        f"of this run (target >= {LATENCY_SHARE_OF_C32:.2f})"
    )


async def latency_budget(pg_url: str, *, postings: int) -> dict[str, float]:
    """Post `postings` jobs one at a time on a stack whose processes write their spans to one
    file (tracing costs time, so the throughput runs above are untraced); the median own time of
    each hop."""
    with tempfile.TemporaryDirectory(prefix="hirepay-bench-") as folder:
        traces = Path(folder) / "spans.jsonl"
        stack = await asyncio.to_thread(lambda: _stack(pg_url, traces).start())
        try:
            with posting_clients(stack.gateway_url, 1) as clients:
                post_job = posters(clients)()
                for i in range(postings):
                    await post_job(0, i)
        finally:
            await asyncio.to_thread(stack.stop)
        spans = await asyncio.to_thread(read_spans, traces)
    return budget(spans, "create-with-payment")
