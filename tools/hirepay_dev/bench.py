"""`make bench`: wallet and pay-to-post throughput, latency and CPU per operation (per process)
beside pgbench TPC-B on the same server, then issue 13's targets judged from the run's own figures;
`--quick` for a short smoke run."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from hirepay_dev import bench_posting, bench_wallet, benchtargets, pg
from hirepay_dev.benchlib import other_databases, pgbench_tpcb
from hirepay_dev.procs import restart_with_environment
from hirepay_platform import eventloop
from hirepay_platform.grpccore import GRPC_CORE_ENV, with_grpc_core_env

# The do-nothing gRPC call measured beside the wallet cases: at their highest concurrency.
FLOOR_CONCURRENCY = 32
FLOOR_CALLS = 20_000
QUICK_FLOOR_CALLS = 5_000


async def grpc_floor(calls: int = FLOOR_CALLS) -> dict[str, Any]:
    """The rate and CPU per call of a do-nothing unary call between a bare grpc.aio server and
    client on this machine (`bench_rpc`'s "bare" case, in processes of their own): what the
    wallet's single calls are up against. Every single Transfer, ReserveHold or ConfirmHold is
    one such call before the wallet does anything, with its client on the same two cores, so
    its rate bounds the single-call cases whatever the wallet does (issue 13's targets for them
    ask as many calls per second as pgbench's transactions)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hirepay_dev.bench_rpc",
        "--only",
        "bare",
        "--concurrency",
        str(FLOOR_CONCURRENCY),
        "--calls",
        str(calls),
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode:
        raise RuntimeError(f"bench_rpc failed ({process.returncode}): {err.decode()[-500:]}")
    floor: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return floor


def floor_line(floor: dict[str, Any]) -> str:
    return (
        f"{'gRPC unary call, does nothing':<34} c={floor['concurrency']:<3} "
        f"{floor['calls_per_s']:8.1f} calls/s  CPU per call: client {floor['client_us']:.0f} us"
        f" + server {floor['server_us']:.0f} us  (bare grpc.aio, both on these cores: the"
        " ceiling of the wallet's single calls)"
    )


async def main(only: str, out_file: str | None, quick: bool = False) -> None:
    server = pg.server_url()
    print(
        f"PostgreSQL: {'DATABASE_URL' if os.environ.get('DATABASE_URL') else 'embedded'}; "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    others = await asyncio.to_thread(other_databases, server)
    print(
        f"other databases on the server: {len(others)} (autovacuum visits each in turn: compare "
        "runs on servers holding the same databases)",
        flush=True,
    )
    print(f"load generator's event loop: {type(asyncio.get_running_loop()).__module__}", flush=True)
    settings = " ".join(f"{name}={os.environ.get(name, '')}" for name in GRPC_CORE_ENV)
    print(f"load generator's gRPC core settings: {settings}", flush=True)
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    seconds = 3 if quick else 10
    print(f"pgbench TPC-B baseline (8 clients, {seconds} s) ...", flush=True)
    baseline = await asyncio.to_thread(pgbench_tpcb, server, clients=8, seconds=seconds)
    print(f"{'pgbench TPC-B':<34} c=8   {baseline:8.1f} tps", flush=True)
    report: dict[str, object] = {"pgbench_tps": baseline, "other_databases": len(others)}

    def out(line: str) -> None:
        print(line, flush=True)

    if only in ("all", "wallet"):
        floor = await grpc_floor(QUICK_FLOOR_CALLS if quick else FLOOR_CALLS)
        out(floor_line(floor))
        report["grpc_floor"] = floor
        report["wallet"] = await bench_wallet.run(server, out, baseline, quick=quick)
    if only in ("all", "posting", "latency"):
        report["posting"] = await bench_posting.run(
            server, out, baseline, quick=quick, latency_only=only == "latency"
        )
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    verdicts = benchtargets.verdicts(report)
    for line in benchtargets.report_lines(verdicts, quick=quick):
        print(line, flush=True)
    report["targets"] = benchtargets.as_json(verdicts)
    if out_file:
        await asyncio.to_thread(Path(out_file).write_text, json.dumps(report, indent=2))


def cli(argv: list[str] | None = None) -> None:
    """`make bench`'s command line, run on the platform's event loop (uvloop), as every service
    runs: each posting and wallet call of the load generator is a few loop turns, at a fraction
    of asyncio's own loop's CPU (the wallet cases' Python calls per Reserve+Confirm pair 307 ->
    151), and the generator shares the two cores with what it measures. grpc.aio runs on it as
    in the services; pgbench, psql and the stacks' processes run in threads (to_thread)."""
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument(
        "--only",
        choices=["all", "wallet", "posting", "latency"],
        default="all",
        help="latency: only the 300 ms provider case and the zero-latency case it is compared with",
    )
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument(
        "--quick", action="store_true", help="fewer concurrency levels, shorter cases (a smoke run)"
    )
    args = parser.parse_args(argv)
    eventloop.run(main(args.only, args.json, args.quick))


def run() -> None:
    """`python -m hirepay_dev.bench`: the command line in a process with the platform's gRPC core
    settings (grpccore.py), started again with them when its environment lacks them. The wallet
    cases' load generator is a gRPC client of the wallet, as jobs and payments are, and they run
    with those settings; so does the do-nothing call the single-call cases are judged against
    (grpc_floor, bench_rpc's default). With grpc's own defaults the generator ran gRPC's
    EventEngine threads beside its event loop: four more threads handing each call's events on,
    on the two cores it shares with the wallet and PostgreSQL (issue 13)."""
    restart_with_environment("hirepay_dev.bench", sys.argv[1:], with_grpc_core_env(os.environ))
    cli()


if __name__ == "__main__":
    run()
