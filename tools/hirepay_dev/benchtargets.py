"""Issue 13's targets judged from one `make bench` run's own figures: a report, not an assertion.

Each verdict compares a figure of the run (or a ratio of two of its figures) with its target;
a target whose figures the run did not measure (`--only`, a missing case) is left out. The
throughput targets are judged at the highest concurrency the run measured (32, or 8 with
`--quick`, which says so).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from hirepay_dev.benchcpu import hirepay_total

# Case names as bench_posting and bench_wallet print them.
POSTING = "pay-to-post (card) via gateway"
POSTING_LATENCY = "pay-to-post (card) +300ms provider"
TRANSFER = "transfer (grouped)"
BATCH_PREFIX = "transfers, batch of"
RESERVE_CONFIRM = "reserve+confirm"
RESERVE_CONFIRM_BATCH_PREFIX = "reserve+confirm, batch of"
RESERVE_CONFIRM_FEE = "reserve+confirm, fee to revenue"
TRANSFER_FEE = "transfer, fee to revenue"

# The limits.
SERIAL_P50_MS = 30.0
P99_TIMES_SERIAL_P50 = 10.0
POSTING_SHARE_OF_PGBENCH = 0.10
LATENCY_SHARE_OF_C32 = 0.75
CPU_MS_PER_POSTING = 20.0
SANDBOX_CPU_MS_PER_POSTING = 5.0
TRANSFERS_SHARE_OF_PGBENCH = 1.0
RESERVE_CONFIRM_SHARE_OF_PGBENCH = 0.5
FEE_COST = 0.20  # a fee to the revenue account may cost at most this share of the throughput
HIREPAY_CPU = "hirepay"  # Hirepay's own CPU (benchcpu.hirepay_total), as per_op_line names it


@dataclass(frozen=True)
class Verdict:
    """One target: what was measured, the limit, whether the run met it."""

    target: str
    measured: float
    limit: float
    unit: str
    met: bool
    basis: str  # which figures of the run the measured value comes from

    def line(self) -> str:
        status = "MET   " if self.met else "MISSED"
        return (
            f"  {status} {self.target}: {self.measured:.2f} {self.unit} "
            f"(target {self.limit:.2f}; {self.basis})"
        )


Case = Mapping[str, Any]
_AT_MOST: Callable[[float, float], bool] = operator.le
_AT_LEAST: Callable[[float, float], bool] = operator.ge


def _find(cases: Iterable[Case], name: str, concurrency: int | None = None) -> Case | None:
    """The case of that name (a prefix match when the name ends with "of") at a concurrency
    (None: the highest measured)."""
    found = [
        c
        for c in cases
        if (c["name"].startswith(name) if name.endswith(" of") else c["name"] == name)
        and (concurrency is None or c["concurrency"] == concurrency)
    ]
    return max(found, key=lambda c: c["concurrency"]) if found else None


def _cpu_ms(case: Case, part: str) -> float | None:
    """CPU-ms per operation of one part (`hirepay`: Hirepay's own total) of a measured case."""
    used: Mapping[str, float] = case.get("cpu_seconds") or {}
    if not used or not case["ops"]:
        return None
    if part == HIREPAY_CPU:
        return 1000 * hirepay_total(used) / case["ops"]
    return 1000 * used[part] / case["ops"] if part in used else None


def _verdict(
    target: str,
    measured: float,
    limit: float,
    unit: str,
    compare: Callable[[float, float], bool],
    basis: str,
    *failing: Case,
) -> Verdict:
    """A throughput only counts when its cases (`failing`) had no failed operation: postings that
    time out under load are not throughput."""
    errors = sum(int(case.get("errors", 0)) for case in failing)
    if errors:
        basis += f"; {errors} failed operations"
    return Verdict(target, measured, limit, unit, compare(measured, limit) and not errors, basis)


def posting_verdicts(posting: Mapping[str, Any], pgbench_tps: float | None) -> list[Verdict]:
    """The pay-to-post targets from bench_posting.run()'s figures."""
    cases: list[Case] = list(posting.get("cases", []))
    verdicts: list[Verdict] = []
    serial = _find(cases, POSTING, 1)
    top = _find(cases, POSTING)
    at = f"c={top['concurrency']}" if top else ""
    if serial is not None:
        verdicts.append(
            _verdict(
                "serial p50 <= 30 ms",
                serial["p50_ms"],
                SERIAL_P50_MS,
                "ms",
                _AT_MOST,
                "pay-to-post c=1 p50",
            )
        )
    if serial is not None and top is not None and top is not serial:
        verdicts.append(
            _verdict(
                f"p99 at {at} <= 10x serial p50",
                top["p99_ms"],
                P99_TIMES_SERIAL_P50 * serial["p50_ms"],
                "ms",
                _AT_MOST,
                f"{at} p99 vs 10 x c=1 p50 {serial['p50_ms']:.1f} ms",
            )
        )
    if top is not None and pgbench_tps:
        verdicts.append(
            _verdict(
                f"pay-to-post at {at} >= 10% of pgbench",
                top["per_second"] / pgbench_tps,
                POSTING_SHARE_OF_PGBENCH,
                "x pgbench",
                _AT_LEAST,
                f"{top['per_second']:.1f}/s vs pgbench {pgbench_tps:.0f} tps",
                top,
            )
        )
    slow = _find(cases, POSTING_LATENCY)
    if slow is not None and top is not None:
        verdicts.append(
            _verdict(
                f"300 ms provider, c={slow['concurrency']} >= 75% of zero-latency {at}",
                slow["per_second"] / top["per_second"] if top["per_second"] else 0.0,
                LATENCY_SHARE_OF_C32,
                f"x {at}",
                _AT_LEAST,
                f"{slow['per_second']:.1f}/s vs {top['per_second']:.1f}/s",
                slow,
                top,
            )
        )
    if top is not None:
        for part, limit, name in (
            (HIREPAY_CPU, CPU_MS_PER_POSTING, "CPU per posting (Hirepay) <= 20 ms"),
            ("sandbox", SANDBOX_CPU_MS_PER_POSTING, "provider sandbox CPU per posting <= 5 ms"),
        ):
            cpu = _cpu_ms(top, part)
            if cpu is not None:
                verdicts.append(
                    _verdict(f"{name} at {at}", cpu, limit, "CPU-ms", _AT_MOST, f"{at} utime+stime")
                )
    return verdicts


def wallet_verdicts(
    wallet: Mapping[str, Any],
    pgbench_tps: float | None,
    floor_calls_per_s: float | None = None,
) -> list[Verdict]:
    """The ledger targets from bench_wallet.run()'s figures, at its highest concurrency.
    `floor_calls_per_s`: the run's do-nothing gRPC call rate (bench.grpc_floor), named beside
    the single-call cases' figures (each of their operations is one or two such calls)."""
    cases: list[Case] = list(wallet.get("cases", []))
    verdicts: list[Verdict] = []
    if pgbench_tps:
        for name, share, target, calls in (
            (TRANSFER, TRANSFERS_SHARE_OF_PGBENCH, "transfers, grouped single calls", 1),
            (BATCH_PREFIX, TRANSFERS_SHARE_OF_PGBENCH, "transfers, CreateTransfers batches", 0),
            (RESERVE_CONFIRM, RESERVE_CONFIRM_SHARE_OF_PGBENCH, "Reserve+Confirm", 2),
            (
                RESERVE_CONFIRM_BATCH_PREFIX,
                RESERVE_CONFIRM_SHARE_OF_PGBENCH,
                "Reserve+Confirm, CreateHolds + ResolveHolds batches",
                0,
            ),
        ):
            case = _find(cases, name)
            if case is not None:
                basis = f"{case['per_second']:.1f}/s vs pgbench {pgbench_tps:.0f} tps"
                if calls and floor_calls_per_s:
                    basis += (
                        f"; {calls} gRPC call{'s' if calls > 1 else ''} each, and a do-nothing"
                        f" gRPC call runs at {floor_calls_per_s:.0f}/s here"
                    )
                verdicts.append(
                    _verdict(
                        f"{target} at c={case['concurrency']} >= {share:.0%} of pgbench",
                        case["per_second"] / pgbench_tps,
                        share,
                        "x pgbench",
                        _AT_LEAST,
                        basis,
                        case,
                    )
                )
    for with_fee, without, target in (
        (TRANSFER_FEE, TRANSFER, "transfer"),
        (RESERVE_CONFIRM_FEE, RESERVE_CONFIRM, "Reserve+Confirm"),
    ):
        fee, plain = _find(cases, with_fee), _find(cases, without)
        if fee is not None and plain is not None and plain["per_second"]:
            verdicts.append(
                _verdict(
                    f"{target} + fee to revenue at c={fee['concurrency']} costs <= 20%",
                    1.0 - fee["per_second"] / plain["per_second"],
                    FEE_COST,
                    "of throughput",
                    _AT_MOST,
                    f"{fee['per_second']:.1f}/s with the fee vs {plain['per_second']:.1f}/s",
                    fee,
                    plain,
                )
            )
    return verdicts


def verdicts(report: Mapping[str, Any]) -> list[Verdict]:
    """Every target the run's report (bench.main's) has figures for."""
    pgbench = report.get("pgbench_tps")
    found: list[Verdict] = []
    if "posting" in report:
        found += posting_verdicts(report["posting"], pgbench)
    if "wallet" in report:
        floor = report.get("grpc_floor") or {}
        found += wallet_verdicts(report["wallet"], pgbench, floor.get("calls_per_s"))
    return found


def report_lines(found: list[Verdict], *, quick: bool) -> list[str]:
    """The verdicts as printed at the end of the run."""
    head = "issue 13 targets, judged from this run's own figures (a report, not an assertion)"
    if quick:
        head += "; --quick: short cases, indicative only"
    return [head + ":", *(v.line() for v in found)] if found else []


def as_json(found: list[Verdict]) -> list[dict[str, Any]]:
    return [asdict(v) for v in found]
