"""`make bench`: wallet and pay-to-post throughput/latency beside pgbench TPC-B on the same server."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

from hirepay_dev import bench_posting, bench_wallet, pg
from hirepay_dev.benchlib import pgbench_tpcb


async def main(only: str, out_file: str | None) -> None:
    server = pg.server_url()
    print(
        f"PostgreSQL: {'DATABASE_URL' if os.environ.get('DATABASE_URL') else 'embedded'}; "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    print("pgbench TPC-B baseline (8 clients, 10 s) ...", flush=True)
    baseline = await asyncio.to_thread(pgbench_tpcb, server, clients=8, seconds=10)
    print(f"{'pgbench TPC-B':<34} c=8   {baseline:8.1f} tps", flush=True)
    report: dict[str, object] = {"pgbench_tps": baseline}

    def out(line: str) -> None:
        print(line, flush=True)

    if only in ("all", "wallet"):
        report["wallet"] = await bench_wallet.run(server, out, baseline)
    if only in ("all", "posting"):
        report["posting"] = await bench_posting.run(server, out, baseline)
    if out_file:
        await asyncio.to_thread(Path(out_file).write_text, json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("--only", choices=["all", "wallet", "posting"], default="all")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    asyncio.run(main(args.only, args.json))
