"""Benchmark helpers: latency statistics, closed-loop load at fixed concurrency, and pgbench TPC-B."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hirepay_dev import pg
from hirepay_dev.benchcpu import CpuMeter, per_op_line

# Seconds every case runs at its concurrency before it is measured (closed_loop).
SETTLE_SECONDS = 2.0


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
    # CPU seconds each process used during the measured interval (empty when not measured).
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    # Operations one call performs (a batch call of 100 transfers is 100 operations).
    per_call: int = 1

    @property
    def per_second(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def line(self, baseline_tps: float | None = None) -> str:
        """The throughput line (latencies are per call), then CPU per operation when measured."""
        ratio = f"  ours/pgbench {self.per_second / baseline_tps:5.2f}" if baseline_tps else ""
        text = (
            f"{self.name:<34} c={self.concurrency:<3} {self.per_second:8.1f} ops/s  "
            f"p50 {self.p50_ms:7.2f} ms  p99 {self.p99_ms:7.2f} ms  "
            f"(n={self.ops}, errors={self.errors}){ratio}"
        )
        if self.cpu_seconds:
            text += "\n" + per_op_line(self.cpu_seconds, self.ops)
        return text


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
    settle_seconds: float = SETTLE_SECONDS,
    meter: CpuMeter | None = None,
    per_call: int = 1,
) -> Result:
    """Run `op(worker, i)` from `concurrency` workers back to back for `seconds`; time each call.
    With `meter`, the CPU of each process over the measured interval is recorded too; a call
    counts as `per_call` operations.

    Before measuring: `warmup` calls one at a time, then all workers for `settle_seconds`, not
    measured (negative `i`), so that the case measures the steady state at its concurrency: the
    services' connection pools have grown to what it needs (each new PostgreSQL connection pays a
    backend start, asyncpg's type introspection and its first plans: at c=32, after c=8, that
    had put ~1-2 CPU-ms per posting of one-off cost into the measured interval)."""
    for i in range(warmup):
        await op(0, -1 - i)
    settled = time.perf_counter() + settle_seconds

    async def settle(w: int) -> None:
        i = warmup
        while time.perf_counter() < settled:
            with contextlib.suppress(Exception):
                await op(w, -1 - i)
            i += 1

    await asyncio.gather(*(settle(w) for w in range(concurrency)))
    latencies: list[float] = []
    errors = 0

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

    if meter is not None:
        await meter.start()
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu = await meter.stop() if meter is not None else {}
    latencies.sort()
    return Result(
        name,
        concurrency,
        len(latencies) * per_call,
        errors,
        elapsed,
        percentile(latencies, 50) * 1000,
        percentile(latencies, 99) * 1000,
        cpu,
        per_call,
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
    # pgbench leaves the server with its run's dirty pages: without a checkpoint here, the case
    # that follows (the wallet's first) paid for writing them out, and for the full-page images
    # of every page it touched first after that checkpoint, inside its measured window (it
    # measured up to a third below the same case run later).
    subprocess.run([str(pg.bin_dir() / "psql"), url, "-q", "-c", "CHECKPOINT"], check=True)
    return float(match.group(1))
