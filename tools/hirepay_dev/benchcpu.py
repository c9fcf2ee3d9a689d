"""CPU per operation for the benchmarks: utime+stime of each process (from /proc/<pid>/stat), of
the PostgreSQL backends serving each database (pids from pg_stat_activity) and of the whole
PostgreSQL server process tree, sampled around a measured interval; the server's time outside
those live backends is shown on its own (`pg:outside`)."""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from hirepay_dev import pg

_TICKS = os.sysconf("SC_CLK_TCK")
PG_TOTAL = "postgres (all)"
# The server tree's time less the live backends of the measured databases: backends that exited
# during the interval, autovacuum workers, parallel workers, the checkpointer, the WAL writer and
# the background writer (issue 13: round 12 saw it rise to ~1.5 CPU-ms per posting, computed by
# hand from the line's other figures; round 13 did not see it again, and shows it on every line).
PG_OUTSIDE = "pg:outside"
LOADGEN = "load generator"


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3 onwards), or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def process_ticks(pid: int, *, reaped_children: bool = False) -> int | None:
    """CPU clock ticks (user + system) of a process; with `reaped_children`, also those of its
    children that have exited (cutime + cstime), so a server's tree loses nothing."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # After the name: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks


def process_cpu(pid: int, *, reaped_children: bool = False) -> float | None:
    """CPU seconds (user + system) of a process (see process_ticks)."""
    ticks = process_ticks(pid, reaped_children=reaped_children)
    return None if ticks is None else ticks / _TICKS


def parent_pid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def children_of(parent: int) -> list[int]:
    """Live child processes of `parent`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and parent_pid(int(entry.name)) == parent:
            found.append(int(entry.name))
    return found


def server_tree_ticks(postmaster: int) -> int:
    """CPU ticks of a PostgreSQL server: the postmaster, its exited and its live children."""
    total = process_ticks(postmaster, reaped_children=True) or 0
    return total + sum(process_ticks(child) or 0 for child in children_of(postmaster))


async def _query(server_url: str, sql: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(pg.libpq_url(server_url))
    try:
        return await connection.fetch(sql)
    finally:
        await connection.close()


async def local_postmaster(server_url: str) -> int | None:
    """The postmaster's pid when the server runs on this machine (a backend's parent), else None."""
    connection = await asyncpg.connect(pg.libpq_url(server_url))
    try:
        # Read while connected: the backend exits with the connection.
        backend = await connection.fetchval("SELECT pg_backend_pid()")
        parent = parent_pid(backend)
    finally:
        await connection.close()
    if parent is None or parent_pid(parent) is None:
        return None  # a remote server: its processes are not ours to see
    return parent


async def backends(server_url: str, databases: Mapping[str, str]) -> dict[int, str]:
    """Client backends (pid -> label) of the named databases (database name -> label)."""
    rows = await _query(
        server_url,
        "SELECT pid, datname FROM pg_stat_activity WHERE backend_type = 'client backend'",
    )
    return {r["pid"]: databases[r["datname"]] for r in rows if r["datname"] in databases}


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuMeter:
    """Samples CPU of the processes of a run (label -> pid), the PostgreSQL backends of their
    databases (database name -> label; shown as "pg:<label>"), the whole server tree, and this
    process (the load generator, reported apart)."""

    server_url: str
    processes: Mapping[str, int]
    databases: Mapping[str, str] = field(default_factory=dict)
    _postmaster: int | None = None
    _before: dict[str, float] = field(default_factory=dict)
    _backends_before: dict[int, tuple[str, int]] = field(default_factory=dict)

    async def start(self) -> None:
        self._postmaster = await local_postmaster(self.server_url)
        self._before = await self._sample()
        self._backends_before = await self._sample_backends()

    async def stop(self) -> dict[str, float]:
        """CPU seconds each part used since start().

        Counted in whole clock ticks and turned into seconds once, so that parts add up exactly;
        the backends are read before the server tree here (and after it in start()), so the
        tree's interval holds theirs and `postgres (all)` is never below a part of it."""
        backends = await self._sample_backends()
        after = await self._sample()
        used = {
            name: (after[name] - self._before[name]) / (1 if name == LOADGEN else _TICKS)
            for name in after
            if name in self._before
        }
        for pid, (label, ticks) in backends.items():
            # A backend opened during the interval counts whole; one closed during it is lost here
            # (the server total still has it).
            start = self._backends_before.get(pid, (label, 0))[1]
            key = f"pg:{label}"
            used[key] = used.get(key, 0.0) + (ticks - start) / _TICKS
        if PG_TOTAL in used and self.databases:
            live = sum(
                ticks - self._backends_before.get(pid, (label, 0))[1]
                for pid, (label, ticks) in backends.items()
            )
            # In ticks, like the parts: what the tree used beyond its live backends' share.
            used[PG_OUTSIDE] = (after[PG_TOTAL] - self._before[PG_TOTAL] - live) / _TICKS
        return used

    async def _sample(self) -> dict[str, float]:
        """Ticks of each process and of the server tree; the load generator's CPU in seconds."""
        sample: dict[str, float] = {LOADGEN: _self_cpu()}
        for name, pid in self.processes.items():
            ticks = process_ticks(pid)
            if ticks is not None:
                sample[name] = ticks
        if self._postmaster is not None:
            sample[PG_TOTAL] = server_tree_ticks(self._postmaster)
        return sample

    async def _sample_backends(self) -> dict[int, tuple[str, int]]:
        if self._postmaster is None or not self.databases:
            return {}
        found = {}
        for pid, label in (await backends(self.server_url, self.databases)).items():
            ticks = process_ticks(pid)
            if ticks is not None:
                found[pid] = (label, ticks)
        return found


# Parts of Hirepay itself (not the provider sandbox, not the load generator).
def hirepay_total(used: Mapping[str, float]) -> float:
    """Hirepay's own CPU: its processes and the PostgreSQL server (all of it, when known, else the
    backends of its databases)."""
    own = sum(v for k, v in used.items() if k not in (LOADGEN, "sandbox") and ":" not in k)
    if PG_TOTAL in used:
        return own
    return own + sum(v for k, v in used.items() if k.startswith("pg:"))


def per_op_line(used: Mapping[str, float], ops: int) -> str:
    """CPU-ms per operation of each part; Hirepay's total first, the sandbox and the load
    generator apart."""
    if ops <= 0:
        return "    cpu: no operations"
    ms = {k: 1000 * v / ops for k, v in used.items()}
    apart = {k: ms.pop(k) for k in (LOADGEN, "sandbox") if k in ms}
    total = 1000 * hirepay_total(used) / ops
    parts = "  ".join(f"{k} {v:.2f}" for k, v in sorted(ms.items()))
    outside = "  ".join(f"{k} {v:.2f}" for k, v in apart.items())
    return f"    cpu ms/op: hirepay {total:.2f} = {parts}   | apart: {outside}"
