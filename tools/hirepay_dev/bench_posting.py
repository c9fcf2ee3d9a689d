"""Pay-to-post benchmark: postings per second, p50/p99 latency and CPU per posting of each process
through the gateway (HTTP) with every process real (sandbox, wallet, payments, jobs), at
concurrency 1, 8 and 32; then the latency budget of one posting by hop, from the traces."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from gateway.service_layer.auth import issue_token
from hirepay_dev.benchcpu import CpuMeter
from hirepay_dev.benchlib import Result, closed_loop
from hirepay_dev.benchtrace import budget, budget_line, read_spans
from hirepay_dev.stack import Ports, Stack

CONCURRENCY = (1, 8, 32)
SECONDS = 15.0
QUICK_CONCURRENCY = (1, 8)
QUICK_SECONDS = 5.0


def _stack(pg_url: str, traces: Path | None = None) -> Stack:
    env = {
        name: {f"{prefix}_LOG_LEVEL": "WARNING"}
        for name, prefix in (("wallet", "WALLET"), ("payments", "PAYMENTS"), ("jobs", "JOBS"))
    }
    env["gateway"] = {"GATEWAY_RATE_LIMIT_PER_MINUTE": "100000", "GATEWAY_LOG_LEVEL": "WARNING"}
    env["sandbox"] = {"SANDBOX_LOG_LEVEL": "WARNING"}
    if traces is not None:  # every process appends its spans to the one file
        for values in env.values():
            values["HIREPAY_TRACES"] = f"file:{traces}"
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


_BODY = {
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


def _poster(http: httpx.AsyncClient, workers: int) -> Callable[[int, int], Awaitable[None]]:
    """`op(worker, i)`: one paid posting by card of the worker's company, checked to be active."""
    run_id = uuid.uuid4().hex[:6]
    headers = {
        w: {"Authorization": f"Bearer {issue_token(user_id=f'bench-{run_id}-{w}', role='company')}"}
        for w in range(workers)
    }

    async def post_job(worker: int, i: int) -> None:
        response = await http.post(
            "/api/jobs/create-with-payment",
            json=_BODY,
            headers={**headers[worker], "Idempotency-Key": f"{run_id}-{worker}-{i}"},
        )
        if response.status_code != 201 or response.json()["job"]["status"] != "active":
            raise RuntimeError(f"posting failed: {response.status_code} {response.text[:200]}")

    return post_job


def _client(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=stack.gateway_url, timeout=60, limits=httpx.Limits(max_connections=64)
    )


async def run(
    pg_url: str, out: Callable[[str], None], baseline: float | None, *, quick: bool = False
) -> dict[str, Any]:
    """Start the whole system on fresh databases, post paid jobs by card, print and return figures
    (throughput, latency, CPU per posting of each process); then, on a second traced stack, the
    latency budget of one posting by hop."""
    levels = QUICK_CONCURRENCY if quick else CONCURRENCY
    seconds = QUICK_SECONDS if quick else SECONDS
    stack = await asyncio.to_thread(lambda: _stack(pg_url).start())
    results: list[Result] = []
    try:
        async with _client(stack) as http:
            post_job = _poster(http, max(levels))
            for concurrency in levels:
                result = await closed_loop(
                    "pay-to-post (card) via gateway",
                    post_job,
                    concurrency=concurrency,
                    seconds=seconds,
                    meter=_meter(pg_url, stack),
                )
                results.append(result)
                out(result.line(baseline))
    finally:
        await asyncio.to_thread(stack.stop)
    hops = await latency_budget(pg_url, postings=10 if quick else 30)
    out(budget_line(hops))
    return {
        "cases": [{**asdict(r), "per_second": r.per_second} for r in results],
        "latency_budget_ms": hops,
    }


async def latency_budget(pg_url: str, *, postings: int) -> dict[str, float]:
    """Post `postings` jobs one at a time on a stack whose processes write their spans to one
    file (tracing costs time, so the throughput runs above are untraced); the median own time of
    each hop."""
    with tempfile.TemporaryDirectory(prefix="hirepay-bench-") as folder:
        traces = Path(folder) / "spans.jsonl"
        stack = await asyncio.to_thread(lambda: _stack(pg_url, traces).start())
        try:
            async with _client(stack) as http:
                post_job = _poster(http, 1)
                for i in range(postings):
                    await post_job(0, i)
        finally:
            await asyncio.to_thread(stack.stop)
        spans = await asyncio.to_thread(read_spans, traces)
    return budget(spans, "create-with-payment")
