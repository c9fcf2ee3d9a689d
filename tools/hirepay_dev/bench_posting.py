"""Pay-to-post benchmark: postings per second and p50/p99 latency through the gateway (HTTP) with
every process real (sandbox, wallet, payments, jobs), at concurrency 1, 8 and 32."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import httpx

from gateway.service_layer.auth import issue_token
from hirepay_dev.benchlib import Result, closed_loop
from hirepay_dev.stack import Ports, Stack

CONCURRENCY = (1, 8, 32)
SECONDS = 15.0


def _stack(pg_url: str) -> Stack:
    env = {
        name: {f"{prefix}_LOG_LEVEL": "WARNING"}
        for name, prefix in (("wallet", "WALLET"), ("payments", "PAYMENTS"), ("jobs", "JOBS"))
    }
    env["gateway"] = {"GATEWAY_RATE_LIMIT_PER_MINUTE": "1000000", "GATEWAY_LOG_LEVEL": "WARNING"}
    env["sandbox"] = {"SANDBOX_LOG_LEVEL": "WARNING"}
    return Stack(pg_url, Ports.free(), db_suffix="_bench", fresh=True, extra_env=env)


async def run(pg_url: str, out: Callable[[str], None], baseline: float | None) -> dict[str, Any]:
    """Start the whole system on fresh databases, post paid jobs by card, print and return figures."""
    stack = await asyncio.to_thread(lambda: _stack(pg_url).start())
    results: list[Result] = []
    run_id = uuid.uuid4().hex[:6]
    try:
        async with httpx.AsyncClient(
            base_url=stack.gateway_url, timeout=60, limits=httpx.Limits(max_connections=64)
        ) as http:
            headers = {
                w: {
                    "Authorization": f"Bearer {issue_token(user_id=f'bench-{run_id}-{w}', role='company')}"
                }
                for w in range(max(CONCURRENCY))
            }
            body = {
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

            async def post_job(worker: int, i: int) -> None:
                response = await http.post(
                    "/api/jobs/create-with-payment",
                    json=body,
                    headers={**headers[worker], "Idempotency-Key": f"{run_id}-{worker}-{i}"},
                )
                if response.status_code != 201 or response.json()["job"]["status"] != "active":
                    raise RuntimeError(
                        f"posting failed: {response.status_code} {response.text[:200]}"
                    )

            for concurrency in CONCURRENCY:
                result = await closed_loop(
                    "pay-to-post (card) via gateway",
                    post_job,
                    concurrency=concurrency,
                    seconds=SECONDS,
                )
                results.append(result)
                out(result.line(baseline))
    finally:
        await asyncio.to_thread(stack.stop)
    return {"cases": [{**asdict(r), "per_second": r.per_second} for r in results]}
