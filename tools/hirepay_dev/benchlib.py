"""Benchmark helpers: latency statistics, closed-loop load at fixed concurrency, and pgbench TPC-B."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hirepay_dev import pg


@dataclass(frozen=True)
class Result:
    """Throughput and latency of one benchmark case."""

    name: str
    concurrency: int
    ops: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def line(self, baseline_tps: float | None = None) -> str:
        ratio = f"  ours/pgbench {self.per_second / baseline_tps:5.2f}" if baseline_tps else ""
        return (
            f"{self.name:<34} c={self.concurrency:<3} {self.per_second:8.1f} ops/s  "
            f"p50 {self.p50_ms:7.2f} ms  p99 {self.p99_ms:7.2f} ms  "
            f"(n={self.ops}, errors={self.errors}){ratio}"
        )


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(pct / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


async def closed_loop(
    name: str,
    op: Callable[[int, int], Awaitable[None]],
    *,
    concurrency: int,
    seconds: float,
    warmup: int = 5,
) -> Result:
    """Run `op(worker, i)` from `concurrency` workers back to back for `seconds`; time each call."""
    for i in range(warmup):
        await op(0, -1 - i)
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal errors
        i = 0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await op(w, i)
                latencies.append(time.perf_counter() - started)
            except Exception:
                errors += 1
            i += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return Result(
        name,
        concurrency,
        len(latencies),
        errors,
        elapsed,
        percentile(latencies, 50) * 1000,
        percentile(latencies, 99) * 1000,
    )


def pgbench_tpcb(server_url: str, *, clients: int = 8, seconds: int = 10, scale: int = 8) -> float:
    """TPC-B-like tps of pgbench (shipped with PostgreSQL) against the same server."""
    url = pg.libpq_url(pg.create_database(server_url, "hirepay_pgbench", drop_existing=True))
    pgbench = str(pg.bin_dir() / "pgbench")
    subprocess.run([pgbench, "-i", "-q", "-s", str(scale), url], check=True, capture_output=True)
    out = subprocess.run(
        [pgbench, "-c", str(clients), "-j", "2", "-T", str(seconds), "-n", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"tps = ([0-9.]+)", out)
    if not match:
        raise RuntimeError(f"pgbench printed no tps: {out}")
    return float(match.group(1))
