"""Benchmark helpers: latency statistics, closed-loop load at fixed concurrency, and pgbench TPC-B."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg

from hirepay_dev import pg
from hirepay_dev.benchcpu import CpuMeter, per_op_line

# Before a case is measured, every worker runs at its concurrency for at least SETTLE_SECONDS and
# at least SETTLE_CALLS calls each, but no longer than SETTLE_MAX_SECONDS (closed_loop).
SETTLE_SECONDS = 2.0
# PostgreSQL plans a prepared statement afresh for each of its first five executions on a
# connection before it may settle on the generic plan; the services' pools spread the calls over
# about as many connections as there are workers, so each worker's sixth call is about when every
# pooled connection has run each of its statements six times. Before, the c=32 posting case
# measured ~10 plans per posting (~13 ms of planning; pg_stat_statements) of connections opened
# for it, a cost a long-lived pool pays once.
SETTLE_CALLS = 6
SETTLE_MAX_SECONDS = 12.0
# The distinct errors of a case a result prints (most frequent first), and how much of each.
ERROR_KINDS = 3
_ERROR_TEXT = 160


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
    # Why calls failed: each distinct error (its type and the start of its message) and how many
    # times, so that a run with errors says what they were.
    error_kinds: dict[str, int] = field(default_factory=dict)
    # Of `seconds`, how long the case waited after its last call for the work its calls left
    # behind (closed_loop's `drain`: a posting's webhooks), counted in its time and its CPU.
    drained_seconds: float = 0.0

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
        if self.drained_seconds:
            text += f"\n    of its {self.seconds:.1f} s, {self.drained_seconds:.1f} s after its last call"
            text += " delivering what its calls left behind"
        if self.error_kinds:
            kinds = sorted(self.error_kinds.items(), key=lambda kind: -kind[1])
            text += "\n" + "\n".join(f"    error x{n}: {kind}" for kind, n in kinds[:ERROR_KINDS])
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
    settle_calls: int = SETTLE_CALLS,
    settle_max_seconds: float = SETTLE_MAX_SECONDS,
    meter: CpuMeter | None = None,
    per_call: int = 1,
    drain: Callable[[], Awaitable[None]] | None = None,
) -> Result:
    """Run `op(worker, i)` from `concurrency` workers back to back for `seconds`; time each call.
    With `meter`, the CPU of each process over the measured interval is recorded too; a call
    counts as `per_call` operations.

    Before measuring: `warmup` calls one at a time, then all workers, not measured (negative
    `i`), for `settle_seconds` and until each has made `settle_calls` calls (at most
    `settle_max_seconds`), so that the case measures the steady state at its concurrency: the
    services' connection pools have grown to what it needs and their connections have settled
    their plans (each new PostgreSQL connection pays a backend start, asyncpg's type
    introspection and five custom plans of each statement: at c=32, after c=8, that had put
    one-off cost into the measured interval).

    `drain` waits until the work the calls left behind is done (a posting's webhooks, which the
    provider delivers after the posting was answered): awaited once before the measured interval
    (what the settling calls left is not the case's) and once after its last call, inside it, so
    that the case's time and CPU include all the work its own calls caused. Without it a case
    whose webhooks lag had its throughput and CPU per posting flattered and the next case paid
    for them (round 19: at c=32 a fifth of the case's webhooks were delivered in the next case,
    the 300 ms latency case)."""
    for i in range(warmup):
        await op(0, -1 - i)
    began = time.perf_counter()
    settled, cap = began + settle_seconds, began + max(settle_seconds, settle_max_seconds)

    async def settle(w: int) -> None:
        i = warmup
        calls = 0
        while (now := time.perf_counter()) < cap and (now < settled or calls < settle_calls):
            with contextlib.suppress(Exception):
                await op(w, -1 - i)
            i += 1
            calls += 1

    await asyncio.gather(*(settle(w) for w in range(concurrency)))
    await _drained(drain)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    # The loop's own cost per call is one clock reading and one append (it shares the cores with
    # what it measures): a call's end is the next call's start and the deadline's check.
    clock, record = time.perf_counter, latencies.append

    async def worker(w: int) -> None:
        i = 0
        started = clock()
        while started < deadline:
            try:
                await op(w, i)
            except Exception as error:
                errors[f"{type(error).__name__}: {str(error)[:_ERROR_TEXT]}"] += 1
                ended = clock()
            else:
                ended = clock()
                record(ended - started)
            started = ended
            i += 1

    if meter is not None:
        await meter.start()
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    drained = await _drained(drain)
    elapsed = time.perf_counter() - started
    cpu = await meter.stop() if meter is not None else {}
    latencies.sort()
    return Result(
        name,
        concurrency,
        len(latencies) * per_call,
        errors.total(),
        elapsed,
        percentile(latencies, 50) * 1000,
        percentile(latencies, 99) * 1000,
        cpu,
        per_call,
        dict(errors),
        drained,
    )


async def _drained(drain: Callable[[], Awaitable[None]] | None) -> float:
    """Seconds `drain` took to return (closed_loop's), 0 without one."""
    if drain is None:
        return 0.0
    began = time.perf_counter()
    await drain()
    return time.perf_counter() - began


# The databases the bench itself makes on its server: pgbench's, the wallet cases', and those of
# the posting stack (`<service>_bench`, hirepay_dev.stack's names with the bench's suffix).
_BENCH_DATABASE = re.compile(r"hirepay_(pgbench|bench_wallet|[a-z]+_bench)")
_SERVER_DATABASES = frozenset({"postgres", "template0", "template1"})


def is_other_database(name: str) -> bool:
    """Whether `name` is a database the bench does not make (nor PostgreSQL's own)."""
    return name not in _SERVER_DATABASES and not _BENCH_DATABASE.fullmatch(name)


def other_databases(server_url: str) -> list[str]:
    """The server's databases besides the bench's own, e.g. those left by test runs in the same
    checkout (its embedded server is theirs too). They cost CPU outside the bench's backends
    whatever the load: autovacuum's launcher visits every database in turn, a worker forked and
    exited for each (with 31 such databases `pg:outside` was 0.37-0.73 CPU-ms per posting at
    c=32 instead of 0.05-0.10, round 13), so runs compare only on servers holding the same."""
    admin = pg.libpq_url(pg.with_database(server_url, "postgres"))
    names = subprocess.run(
        [str(pg.bin_dir() / "psql"), admin, "-At", "-c", "SELECT datname FROM pg_database"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return sorted(name for name in names if is_other_database(name))


# pgbench's database (pgbench_tpcb makes it afresh on every run).
PGBENCH_DATABASE = "hirepay_pgbench"
# How long quiet_server waits at most for the server's background work to end.
QUIET_MAX_SECONDS = 120.0
_QUIET_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Quieted:
    """What quiet_server found, waited for and did."""

    # Client backends still open on the named databases when it began (database -> count).
    backends: dict[str, int]
    # The autovacuum workers it waited for ("<database>: <what each did>"), in the order seen.
    autovacuum: tuple[str, ...]
    vacuumed: tuple[str, ...]
    # WAL written since the last checkpoint, and the buffers the CHECKPOINT wrote out.
    wal_bytes: int
    checkpoint_buffers: int
    seconds: float
    # The wait ended at QUIET_MAX_SECONDS with backends or autovacuum workers still at work.
    gave_up: bool = False

    def line(self) -> str:
        open_backends = ", ".join(f"{n} on {db}" for db, n in sorted(self.backends.items()))
        workers = "; ".join(self.autovacuum)
        return (
            f"    quieted in {self.seconds:.1f} s: client backends waited for: "
            f"{open_backends or 'none'}; autovacuum workers waited for: {workers or 'none'}; "
            f"VACUUM (ANALYZE) {', '.join(self.vacuumed) or 'nothing'}; CHECKPOINT wrote "
            f"{self.checkpoint_buffers} buffers ({self.wal_bytes / 1e6:.1f} MB of WAL since "
            f"the last one)" + ("; GAVE UP waiting, not quiet" if self.gave_up else "")
        )


async def quiet_server(
    server_url: str, databases: Sequence[str], *, max_seconds: float = QUIET_MAX_SECONDS
) -> Quieted:
    """Bring the server to the state a case run alone starts in, after earlier cases on the
    named `databases` (those that exist): their client backends gone (the stacks that used them
    stopped), no autovacuum worker at work anywhere on the server, each of them vacuumed and
    analyzed (no table left due, so that autovacuum's next visit finds nothing to do), then a
    CHECKPOINT (their dirty pages written out). Otherwise the next case pays for the earlier
    cases' leftovers inside its window: the wallet cases leave their tables due for autovacuum
    (a few CPU-seconds of work, landing within a naptime of their end) and shared buffers full
    of dirty pages that the next case's backends must write out themselves before reusing
    them, or that a checkpoint then writes while the case waits on its own WAL flushes."""
    began = time.perf_counter()
    deadline = began + max_seconds
    admin = await asyncpg.connect(pg.libpq_url(pg.with_database(server_url, "postgres")))
    try:
        present = await admin.fetch(
            "SELECT datname FROM pg_database WHERE datname = any($1::text[])", list(databases)
        )
        names = [r["datname"] for r in present]
        seen_workers: dict[str, None] = {}
        backends, gave_up = await _wait_for_quiet(admin, names, seen_workers, deadline)
        for name in names:
            connection = await asyncpg.connect(pg.libpq_url(pg.with_database(server_url, name)))
            try:
                await connection.execute("VACUUM (ANALYZE)")
            finally:
                await connection.close()
        # A worker the launcher started meanwhile (another database's turn).
        _, gave_up_again = await _wait_for_quiet(admin, names, seen_workers, deadline)
        wal_bytes = await admin.fetchval(
            "SELECT pg_current_wal_lsn() - redo_lsn FROM pg_control_checkpoint()"
        )
        before = await _checkpoint_buffers(admin)
        await admin.execute("CHECKPOINT")
        written = await _checkpoint_buffers(admin) - before
    finally:
        await admin.close()
    return Quieted(
        backends,
        tuple(seen_workers),
        tuple(names),
        int(wal_bytes),
        written,
        time.perf_counter() - began,
        gave_up or gave_up_again,
    )


async def _wait_for_quiet(
    admin: asyncpg.Connection, names: list[str], workers: dict[str, None], deadline: float
) -> tuple[dict[str, int], bool]:
    """Wait until no client backend is open on `names` and no autovacuum worker runs (or until
    `deadline`); the backends found at first, and whether it gave up. Adds what each autovacuum
    worker seen did to `workers`."""
    first: dict[str, int] | None = None
    while True:
        rows = await admin.fetch(
            "SELECT backend_type, datname, query FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND (backend_type = 'autovacuum worker' "
            "OR (backend_type = 'client backend' AND datname = any($1::text[])))",
            names,
        )
        clients = Counter(r["datname"] for r in rows if r["backend_type"] == "client backend")
        for row in rows:
            if row["backend_type"] == "autovacuum worker":
                workers[f"{row['datname']}: {row['query'] or 'starting'}"] = None
        if first is None:
            first = dict(clients)
        if not rows:
            return first, False
        if time.perf_counter() >= deadline:
            return first, True
        await asyncio.sleep(_QUIET_POLL_SECONDS)


async def _checkpoint_buffers(admin: asyncpg.Connection) -> int:
    """Buffers written by checkpoints since the statistics were reset (PostgreSQL 17 moved them
    from pg_stat_bgwriter to pg_stat_checkpointer)."""
    if admin.get_server_version().major >= 17:
        return int(await admin.fetchval("SELECT buffers_written FROM pg_stat_checkpointer"))
    return int(await admin.fetchval("SELECT buffers_checkpoint FROM pg_stat_bgwriter"))


def pgbench_tpcb(server_url: str, *, clients: int = 8, seconds: int = 10, scale: int = 8) -> float:
    """TPC-B-like tps of pgbench (shipped with PostgreSQL) against the same server."""
    url = pg.libpq_url(pg.create_database(server_url, PGBENCH_DATABASE, drop_existing=True))
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
