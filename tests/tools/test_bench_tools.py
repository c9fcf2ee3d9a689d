"""The benchmark's measuring tools: CPU per process from /proc and the latency budget from spans."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import asyncpg
import grpc
import pytest

from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay_dev import bench_wallet, benchlib, benchtargets, pg
from hirepay_dev.bench_wallet import Fixture, Signer
from hirepay_dev.benchcpu import (
    LOADGEN,
    PG_OUTSIDE,
    PG_TOTAL,
    CpuMeter,
    hirepay_total,
    per_op_line,
    process_cpu,
)
from hirepay_dev.benchlib import closed_loop, is_other_database, other_databases, pgbench_tpcb
from hirepay_dev.benchtargets import POSTING, POSTING_LATENCY, verdicts
from hirepay_dev.benchtrace import budget, own_time_by_hop
from hirepay_platform.identity import (
    SERVICE_TOKEN_HEADER,
    AccessPolicy,
    ServiceAuthenticator,
    TokenMinter,
)
from tests.support.virtual_time import in_virtual_time

MS = 1_000_000


def span(service, name, span_id, parent, start_ms, end_ms, **attributes):
    return {
        "service": service,
        "name": name,
        "trace_id": "t1",
        "span_id": span_id,
        "parent_span_id": parent,
        "start_ns": start_ms * MS,
        "end_ns": end_ms * MS,
        "attributes": attributes,
    }


def test_own_time_is_duration_less_children_per_hop():
    trace = [
        span("gateway", "HTTP POST", "g", None, 0, 100, **{"http.route": "/x/create"}),
        span("jobs", "jobs/Create", "j", "g", 10, 90),
        span("payments", "payments/Authorize", "p", "j", 20, 50),
        span("payments", "provider.authorize", "pp", "p", 22, 34),
        span("payments", "db.commit", "pc", "p", 40, 45),
        span("wallet", "wallet/Transfer", "w", "j", 60, 70),
    ]
    hops = own_time_by_hop(trace)
    assert hops["total"] == 100
    assert hops["gateway"] == 20 and hops["jobs"] == 40 and hops["wallet"] == 10
    assert hops["payments"] == 13 and hops["payments commit"] == 5 and hops["provider"] == 12
    assert budget(trace, "create")["traces"] == 1
    assert budget(trace, "webhook") == {}


def test_client_spans_are_the_wire_between_services_and_the_http_calls_out():
    """The OpenTelemetry instrumentations' spans: a gRPC CLIENT span less the callee's SERVER
    span is the wire between them; an httpx CLIENT span is a call out (the provider's time)."""
    rpc = {"rpc.system": "grpc", "rpc.service": "hirepay.payments.v1.PaymentsService"}
    trace = [
        span("jobs", "/hirepay.jobs.v1.JobsService/Create", "j", None, 0, 100),
        {
            **span(
                "jobs", "/hirepay.payments.v1.PaymentsService/Authorize", "jc", "j", 10, 70, **rpc
            ),
            "kind": "CLIENT",
        },
        span("payments", "/hirepay.payments.v1.PaymentsService/Authorize", "p", "jc", 15, 65),
        {
            **span("payments", "POST", "ph", "p", 20, 50, **{"http.request.method": "POST"}),
            "kind": "CLIENT",
        },
    ]
    hops = own_time_by_hop(trace)
    assert hops["jobs"] == 40 and hops["jobs->payments wire"] == 10
    assert hops["payments"] == 20 and hops["payments http out"] == 30


def test_sql_statement_spans_are_their_services_sql_hop():
    """SQLAlchemy's statement spans (CLIENT, `db.system`) are the service's round trips to its
    database, not a call out and not the service's own Python time."""
    sql = {"db.system": "postgresql", "db.statement": "SELECT 1"}
    trace = [
        span("jobs", "/hirepay.jobs.v1.JobsService/Create", "j", None, 0, 100),
        {**span("jobs", "SELECT hirepay", "s1", "j", 10, 25, **sql), "kind": "CLIENT"},
        {**span("jobs", "UPDATE hirepay", "s2", "j", 30, 40, **sql), "kind": "CLIENT"},
        span("jobs", "db.commit", "c", "j", 40, 45),
    ]
    hops = own_time_by_hop(trace)
    assert hops["jobs sql"] == 25 and hops["jobs commit"] == 5 and hops["jobs"] == 70
    assert "jobs http out" not in hops


def test_process_cpu_reads_proc():
    busy = sum(i * i for i in range(200_000))
    assert busy and (process_cpu(os.getpid()) or 0) > 0
    assert process_cpu(2**22 + 12345) is None  # no such process


def _meter_of_a_test_database(
    pg_server_url: str, make_database: Callable[[str], str]
) -> tuple[str, CpuMeter]:
    """A fresh database (its libpq URL; dropped with the session's others, so no later bench finds
    it among the server's other databases) and a meter of this process and of its backends
    ("test")."""
    name = make_database("hirepay_benchcpu_test")
    database = urlparse(name).path.lstrip("/")
    return pg.libpq_url(name), CpuMeter(pg_server_url, {"me": os.getpid()}, {database: "test"})


async def test_meter_sees_the_server_and_the_backends_of_a_database(pg_server_url, make_database):
    url, meter = _meter_of_a_test_database(pg_server_url, make_database)
    connection = await asyncpg.connect(url)
    try:
        await meter.start()
        await connection.fetchval("SELECT count(*) FROM generate_series(1, 3000000)")
        used = await meter.stop()
    finally:
        await connection.close()
    assert used[PG_TOTAL] >= used["pg:test"] > 0
    assert LOADGEN in used and "me" in used
    assert hirepay_total(used) == used["me"] + used[PG_TOTAL]


async def test_the_server_time_outside_the_live_backends_is_shown_apart(
    pg_server_url, make_database
):
    """A backend that works and exits within the interval is no live backend at its end: its time
    is the server's, outside the database's live backends (`pg:outside`, issue 13), and not part
    of Hirepay's total twice."""
    url, meter = _meter_of_a_test_database(pg_server_url, make_database)
    kept = await asyncpg.connect(url)
    try:
        await meter.start()
        gone = await asyncpg.connect(url)
        pid = await gone.fetchval("SELECT pg_backend_pid()")
        await gone.fetchval("SELECT count(*) FROM generate_series(1, 3000000)")
        await gone.close()
        for _ in range(200):  # the backend exits (and is reaped) after the connection closes
            if process_cpu(pid) is None:
                break
            await asyncio.sleep(0.01)
        await kept.fetchval("SELECT 1")
        used = await meter.stop()
    finally:
        await kept.close()
    assert used[PG_OUTSIDE] > 0.05  # the exited backend's count, at least
    assert used[PG_OUTSIDE] > used["pg:test"]
    assert used[PG_OUTSIDE] + used["pg:test"] == pytest.approx(used[PG_TOTAL], abs=1e-9)
    assert hirepay_total(used) == used["me"] + used[PG_TOTAL]
    assert "pg:outside" in per_op_line(used, 1)


async def test_pgbench_leaves_the_server_checkpointed(pg_server_url):
    """The baseline's dirty pages are written before the cases run, not in the first one's window:
    pgbench's run ends with a checkpoint that began after its last transaction committed."""
    tps = await asyncio.to_thread(pgbench_tpcb, pg_server_url, clients=2, seconds=1, scale=1)
    connection = await asyncpg.connect(
        pg.libpq_url(pg.with_database(pg_server_url, "hirepay_pgbench"))
    )
    try:
        # Every pgbench transaction appends a history row; none may be newer than the checkpoint
        # (the next transaction id at its start is above every one of theirs).
        last_xid = await connection.fetchval("SELECT max(xmin::text::bigint) FROM pgbench_history")
        checkpoint_next_xid = await connection.fetchval(
            "SELECT split_part(next_xid, ':', 2)::bigint FROM pg_control_checkpoint()"
        )
    finally:
        await connection.close()
    assert tps > 0 and last_xid is not None
    assert checkpoint_next_xid > last_xid, (checkpoint_next_xid, last_xid)


def test_the_benchs_own_databases_are_told_from_others():
    for own in (
        "hirepay_pgbench",
        "hirepay_bench_wallet",
        "hirepay_payments_bench",
        "hirepay_jobs_bench",
        "hirepay_wallet_bench",
        "postgres",
        "template0",
    ):
        assert not is_other_database(own), own
    for other in (
        "hirepay_payments_e2e_341880",
        "t_wallet_0984d7b78b",
        "readiness_kept_1",
        "hirepay_payments_bench_old",
        "app",
    ):
        assert is_other_database(other), other


def test_the_servers_other_databases_are_listed(pg_server_url, make_database):
    """The bench prints how many databases it did not make share its server (round 13: those a
    checkout's test runs left cost autovacuum work outside the bench's backends)."""
    url = make_database("bench_other")
    name = url.split("?", 1)[0].rsplit("/", 1)[1]
    found = other_databases(url)
    assert name in found
    assert not {"postgres", "template0", "template1"} & set(found)


def case(name, concurrency, per_second, p50, p99, *, errors=0, cpu=None, ops=100):
    return {
        "name": name,
        "concurrency": concurrency,
        "per_second": per_second,
        "p50_ms": p50,
        "p99_ms": p99,
        "errors": errors,
        "ops": ops,
        "cpu_seconds": cpu or {},
    }


def test_the_targets_are_judged_from_the_runs_own_figures():
    report = {
        "pgbench_tps": 1000.0,
        "posting": {
            "cases": [
                case(POSTING, 1, 40.0, 25.0, 40.0),
                # 100 postings: Hirepay 1 CPU-s (10 ms each), the sandbox 0.8 s apart (8 ms).
                case(POSTING, 32, 120.0, 200.0, 240.0, cpu={"jobs": 1.0, "sandbox": 0.8}),
                case(POSTING_LATENCY, 128, 80.0, 1500.0, 2000.0, errors=1),
            ]
        },
        "wallet": {
            "cases": [
                case("transfer (grouped)", 32, 1200.0, 20.0, 30.0),
                case("transfer, fee to revenue", 32, 900.0, 25.0, 40.0),
                case("reserve+confirm", 32, 400.0, 60.0, 90.0),
                case("reserve+confirm, batch of 100", 8, 300.0, 500.0, 800.0),
                case("reserve+confirm, batch of 100", 32, 600.0, 900.0, 1500.0),
            ]
        },
    }
    found = {v.target: v for v in verdicts(report)}
    assert found["serial p50 <= 30 ms"].met
    assert found["p99 at c=32 <= 10x serial p50"].met  # 240 <= 250
    assert found["pay-to-post at c=32 >= 10% of pgbench"].measured == 0.12
    assert found["CPU per posting (Hirepay) <= 20 ms at c=32"].measured == 10.0
    assert not found["provider sandbox CPU per posting <= 5 ms at c=32"].met  # 8 ms
    latency = found["300 ms provider, c=128 >= 75% of zero-latency c=32"]
    # 80/120 = 0.67 < 0.75, and a posting that failed does not count as throughput anyway.
    assert not latency.met and "1 failed operations" in latency.basis
    assert found["transfers, grouped single calls at c=32 >= 100% of pgbench"].met
    # The single calls and the batches are judged apart, each at its highest concurrency.
    single = found["Reserve+Confirm at c=32 >= 50% of pgbench"]
    assert not single.met and single.measured == 0.4
    batched = found["Reserve+Confirm, CreateHolds + ResolveHolds batches at c=32 >= 50% of pgbench"]
    assert batched.met and batched.measured == 0.6
    fee = found["transfer + fee to revenue at c=32 costs <= 20%"]
    assert round(fee.measured, 2) == 0.25 and not fee.met
    assert verdicts({"pgbench_tps": 1000.0}) == []  # nothing measured, nothing judged


def test_the_single_call_verdicts_name_the_runs_do_nothing_grpc_call_rate():
    """A run that measured the bare gRPC call (bench.grpc_floor) says beside each single-call
    case how many calls an operation makes and how fast a call that does nothing goes: the
    ceiling those cases are judged under. The batch cases, one call per hundred operations,
    and a run without the figure say nothing of it; the verdicts themselves do not change."""
    wallet = {
        "cases": [
            case("transfer (grouped)", 32, 1200.0, 20.0, 30.0),
            case("reserve+confirm", 32, 400.0, 60.0, 90.0),
            case("transfers, batch of 100", 32, 9000.0, 200.0, 300.0),
        ]
    }
    floor = {"case": "bare", "concurrency": 32, "calls_per_s": 4850.4, "client_us": 118.0}
    with_floor = {
        v.target: v
        for v in verdicts({"pgbench_tps": 1000.0, "wallet": wallet, "grpc_floor": floor})
    }
    without = {v.target: v for v in verdicts({"pgbench_tps": 1000.0, "wallet": wallet})}
    transfers = with_floor["transfers, grouped single calls at c=32 >= 100% of pgbench"]
    assert transfers.basis.endswith(
        "1 gRPC call each, and a do-nothing gRPC call runs at 4850/s here"
    )
    pairs = with_floor["Reserve+Confirm at c=32 >= 50% of pgbench"]
    assert "2 gRPC calls each, and a do-nothing gRPC call runs at 4850/s" in pairs.basis
    batches = with_floor["transfers, CreateTransfers batches at c=32 >= 100% of pgbench"]
    assert "gRPC call" not in batches.basis
    assert all("gRPC call" not in v.basis for v in without.values())
    assert [(v.target, v.measured, v.met) for v in with_floor.values()] == [
        (v.target, v.measured, v.met) for v in without.values()
    ]


async def test_the_bench_measures_a_do_nothing_grpc_call_in_processes_of_its_own():
    """bench.grpc_floor runs bench_rpc's bare case (a grpc.aio server answering an empty reply,
    a bare client, each its own process) and returns its rate and CPU per call on each side."""
    from hirepay_dev.bench import floor_line, grpc_floor

    floor = await grpc_floor(calls=640)
    assert floor["case"] == "bare" and floor["concurrency"] == 32
    assert floor["calls_per_s"] > 0 and floor["client_us"] > 0 and floor["server_us"] > 0
    line = floor_line(floor)
    assert "gRPC unary call, does nothing" in line and f"{floor['calls_per_s']:.1f} calls/s" in line


def test_a_failed_batch_of_holds_is_not_throughput():
    """A Reserve+Confirm batch case with a failed operation (an item refused, a call timed out)
    misses its target whatever its rate."""
    report = {
        "pgbench_tps": 1000.0,
        "wallet": {"cases": [case("reserve+confirm, batch of 100", 32, 900.0, 1.0, 2.0, errors=2)]},
    }
    (verdict,) = verdicts(report)
    assert verdict.measured == 0.9 and not verdict.met
    assert "2 failed operations" in verdict.basis
    assert verdict.target.startswith("Reserve+Confirm, CreateHolds + ResolveHolds batches")


async def test_a_case_is_measured_after_every_worker_has_run_at_its_concurrency():
    # The steady state at the case's concurrency (pools grown), not the ramp-up: every worker runs
    # unmeasured calls first, with keys of their own (negative i), and only then is time counted.
    seen: list[tuple[int, int, bool]] = []
    measuring = False
    in_flight = most_in_flight = 0

    async def op(worker: int, i: int) -> None:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        seen.append((worker, i, measuring))
        await asyncio.sleep(0.005)
        in_flight -= 1

    class Meter:
        async def start(self) -> None:
            nonlocal measuring
            measuring = True
            assert most_in_flight == 4  # every worker ran at once before the measuring began

        async def stop(self) -> dict[str, float]:
            return {}

    result = await closed_loop(
        "case", op, concurrency=4, seconds=0.1, warmup=2, settle_seconds=0.1, meter=Meter()
    )
    unmeasured = [(w, i) for w, i, m in seen if not m]
    measured = [(w, i) for w, i, m in seen if m]
    assert {w for w, _ in unmeasured} == {0, 1, 2, 3}
    assert all(i < 0 for _, i in unmeasured) and all(i >= 0 for _, i in measured)
    assert len(set(unmeasured)) == len(unmeasured)  # no key used twice
    assert result.ops == len(measured)


async def test_every_worker_makes_its_settling_calls_before_the_case_is_measured():
    """However short the settling time, each worker first makes `settle_calls` unmeasured calls
    (the pools' connections past PostgreSQL's custom plans), bounded by `settle_max_seconds`."""
    unmeasured: Counter[int] = Counter()
    measuring = False

    async def op(worker: int, i: int) -> None:
        await asyncio.sleep(0.01)
        if not measuring and i <= -3:  # after the 2 one-at-a-time warm-up calls
            unmeasured[worker] += 1

    class Meter:
        async def start(self) -> None:
            nonlocal measuring
            measuring = True
            assert min(unmeasured[w] for w in range(3)) >= 6, unmeasured

        async def stop(self) -> dict[str, float]:
            return {}

    await closed_loop(
        "case", op, concurrency=3, seconds=0.05, warmup=2, settle_seconds=0.001, meter=Meter()
    )
    started = time.perf_counter()
    await closed_loop(
        "capped",
        lambda w, i: asyncio.sleep(0.02),
        concurrency=2,
        seconds=0.01,
        warmup=0,
        settle_seconds=0.001,
        settle_calls=1000,
        settle_max_seconds=0.1,
    )
    assert time.perf_counter() - started < 1.0


@in_virtual_time(benchlib)
async def test_a_case_with_errors_says_what_they_were():
    """A failed call counts as an error and is not timed; the result keeps each distinct error
    with its count, and its line prints the most frequent ones. In virtual time: every worker
    makes its 50 calls of the 0.1 s case however busy the machine (a thread holding the GIL left
    it 2 calls on the real clock: no TimeoutError)."""

    async def op(worker: int, i: int) -> None:
        await asyncio.sleep(0.002)
        if i >= 0 and i % 3 == 1:
            raise RuntimeError(f"posting failed: 504 {'x' * 500}")
        if i >= 0 and i % 3 == 2:
            raise TimeoutError("deadline")

    result = await closed_loop("case", op, concurrency=2, seconds=0.1, settle_seconds=0.01)

    kinds = result.error_kinds
    assert result.errors == sum(kinds.values()) > 0 and result.ops > 0
    assert set(kinds) == {
        f"RuntimeError: posting failed: 504 {'x' * 140}",
        "TimeoutError: deadline",
    }
    assert "error x" in result.line() and "TimeoutError: deadline" in result.line()
    quiet = await closed_loop("ok", lambda w, i: asyncio.sleep(0.001), concurrency=1, seconds=0.02)
    assert quiet.errors == 0 and quiet.error_kinds == {} and "error x" not in quiet.line()


@in_virtual_time(benchlib)
async def test_a_case_waits_for_what_its_calls_left_behind_and_counts_it():
    """With a `drain` (a posting's webhooks, delivered after it was answered), the case is
    measured from an empty backlog (what the settling calls left is drained before the meter
    starts) to an empty one (its own calls' leftovers drained before the meter stops), and the
    drain's time is part of the case's: its throughput and CPU include the work its calls
    caused. In virtual time: each leftover takes 10 ms to deliver, one at a time."""
    left: list[tuple[int, int]] = []  # what the calls made so far still owe
    events: list[str] = []

    async def op(worker: int, i: int) -> None:
        await asyncio.sleep(0.005)
        left.append((worker, i))

    async def drain() -> None:
        events.append(f"drain from {len(left)}")
        while left:
            await asyncio.sleep(0.01)
            left.pop()

    class Meter:
        async def start(self) -> None:
            events.append(f"start with {len(left)} left")

        async def stop(self) -> dict[str, float]:
            events.append(f"stop with {len(left)} left")
            return {}

    result = await closed_loop(
        "case", op, concurrency=2, seconds=0.1, settle_seconds=0.01, meter=Meter(), drain=drain
    )

    owed = result.ops  # each measured call left one item behind
    assert events[1:] == ["start with 0 left", f"drain from {owed}", "stop with 0 left"], events
    assert events[0].startswith("drain from ") and events[0] != "drain from 0"
    # The case's time is its calls' 0.1 s and the 10 ms per item of their leftovers after them.
    assert result.drained_seconds == pytest.approx(0.01 * owed, abs=0.006)
    assert result.seconds == pytest.approx(0.1 + result.drained_seconds, abs=0.011)
    assert result.per_second == pytest.approx(owed / result.seconds)
    assert "after its last call delivering what its calls left behind" in result.line()
    plain = await closed_loop("plain", op, concurrency=1, seconds=0.02, settle_seconds=0.01)
    assert plain.drained_seconds == 0.0 and "left behind" not in plain.line()


async def test_the_posting_cases_drain_waits_until_no_webhook_is_pending():
    """Pay-to-post's drain asks the Stripe sandbox for its webhook backlog until nothing is
    pending (in flight or waiting for a retry); a backlog that never empties fails the run,
    saying how many are left, instead of waiting forever."""
    from hirepay_dev.bench_posting import webhooks_delivered

    class Admin:
        def __init__(self, pending: list[int]) -> None:
            self.pending, self.asked = pending, 0

        def webhook_backlog(self) -> dict[str, int]:
            self.asked += 1
            left = self.pending.pop(0) if len(self.pending) > 1 else self.pending[0]
            return {"succeeded": 40, "pending": left, "scheduled": 0}

    draining = Admin([5, 3, 0])
    await webhooks_delivered(draining, poll_seconds=0.001)()  # type: ignore[arg-type]
    assert draining.asked == 3
    stuck = Admin([2])
    with pytest.raises(RuntimeError, match="2 webhooks still undelivered"):
        await webhooks_delivered(stuck, poll_seconds=0.001, max_seconds=0.02)()  # type: ignore[arg-type]
    assert stuck.asked > 1
    none = Admin([0])
    await webhooks_delivered(none, poll_seconds=0.001)()  # type: ignore[arg-type]
    assert none.asked == 1


async def test_the_hold_batch_case_reserves_then_confirms_the_same_branches():
    """One operation of "reserve+confirm, batch of N": a CreateHolds call of N Trys from the
    worker's payer to its payee, then a ResolveHolds call confirming exactly those branches; an
    item refused fails the operation (it is not throughput)."""
    calls: list[tuple[str, Any]] = []
    refused: list[str] = []

    class Stub:
        async def CreateHolds(self, request: Any, timeout: float, metadata: Any) -> Any:
            calls.append(("CreateHolds", request))
            return wpb.CreateHoldsResponse(
                results=[wpb.HoldBatchResult(index=i) for i in range(len(request.holds))]
            )

        async def ResolveHolds(self, request: Any, timeout: float, metadata: Any) -> Any:
            calls.append(("ResolveHolds", request))
            results = [wpb.HoldBatchResult(index=i) for i in range(len(request.resolutions))]
            for i in range(len(refused)):
                results[i] = wpb.HoldBatchResult(
                    index=i, error=wpb.TransferError(reason=refused[i])
                )
            return wpb.ResolveHoldsResponse(results=results)

    fixture = Fixture(Stub(), pairs=2, sign=Signer("wallet", _MINTER))  # type: ignore[arg-type]
    fixture.payers, fixture.payees = ["p0", "p1"], ["q0", "q1"]
    await fixture.hold_batch(5)(1, 0)
    (name, create), (then, resolve) = calls
    assert (name, then) == ("CreateHolds", "ResolveHolds")
    assert [(h.account_id, h.destination_account_id) for h in create.holds] == [("p1", "q1")] * 5
    reserved = [h.branch for h in create.holds]
    assert len({b.global_tx_id for b in reserved}) == 5
    assert [r.WhichOneof("action") for r in resolve.resolutions] == ["confirm"] * 5
    assert [r.confirm.branch for r in resolve.resolutions] == reserved
    calls.clear()
    await fixture.hold_batch(5)(1, 1)
    assert not {h.branch.global_tx_id for h in calls[0][1].holds} & {
        b.global_tx_id for b in reserved
    }  # every operation has branches of its own
    refused.append("HOLD_EXPIRED")
    with pytest.raises(RuntimeError, match="1 confirms refused: HOLD_EXPIRED"):
        await fixture.hold_batch(5)(0, 2)


_SECRET = "bench-tools-secret-0123456789abcdef0123456789"
_MINTER = TokenMinter("jobs", _SECRET)


async def test_the_wallet_cases_sign_each_call_themselves_one_unary_call_with_its_own_ids():
    """The wallet bench's load generator calls a stub on a channel without interceptors and passes
    each call its metadata (issue 13, round 14: grpc.aio's interceptor machinery cost the load
    generator several times a plain call on the two cores it shares with the wallet): each
    operation is still one unary call per RPC with ids of its own, and every call carries jobs'
    service token for the wallet, which the wallet's authenticator accepts."""
    calls: list[tuple[str, Any, Any]] = []

    class Stub:
        async def Transfer(self, request: Any, timeout: float, metadata: Any) -> Any:
            calls.append(("Transfer", request, metadata))
            return wpb.TransferResponse()

        async def ReserveHold(self, request: Any, timeout: float, metadata: Any) -> Any:
            calls.append(("ReserveHold", request, metadata))
            return wpb.HoldResponse()

        async def ConfirmHold(self, request: Any, timeout: float, metadata: Any) -> Any:
            calls.append(("ConfirmHold", request, metadata))
            return wpb.HoldResponse()

    fixture = Fixture(Stub(), pairs=1, sign=Signer("wallet", _MINTER))  # type: ignore[arg-type]
    fixture.payers, fixture.payees, fixture.revenue = ["p0"], ["q0"], "rev"
    for i in range(2):
        await fixture.transfer(None)(0, i)
        await fixture.transfer("rev")(0, i)
        await fixture.reserve_confirm(False)(0, i)
    assert [name for name, *_ in calls] == [
        "Transfer",
        "Transfer",
        "ReserveHold",
        "ConfirmHold",
    ] * 2
    transfers = [request for name, request, _ in calls if name == "Transfer"]
    assert len({t.request_id for t in transfers}) == len({t.transfer_id for t in transfers}) == 4
    assert [len(t.legs) for t in transfers] == [1, 2, 1, 2]
    assert transfers[1].legs[1].to_account_id == "rev"
    branches = [r.branch.global_tx_id for name, r, _ in calls if name == "ReserveHold"]
    assert len(set(branches)) == 2
    authenticator = ServiceAuthenticator("wallet", _SECRET, AccessPolicy.of({"jobs"}))
    for name, _, metadata in calls:
        assert isinstance(metadata, grpc.aio.Metadata)
        assert authenticator.authenticate(tuple(metadata), name).service == "jobs"


def test_the_bench_signer_makes_its_metadata_again_only_when_the_token_changes():
    """The metadata object is reused while the minter reuses its token (half the token's life),
    and made again, with the new token, once the minter mints one."""
    now = [1_000_000.0]
    minter = TokenMinter("jobs", _SECRET, clock=lambda: now[0])
    sign = Signer("wallet", minter)
    first = sign()
    assert sign() is first
    assert dict(first)[SERVICE_TOKEN_HEADER] == minter.service_token("wallet")
    now[0] += minter.ttl  # past half its life: a new token
    second = sign()
    assert second is not first
    assert dict(second)[SERVICE_TOKEN_HEADER] == minter.service_token("wallet")
    assert dict(second)[SERVICE_TOKEN_HEADER] != dict(first)[SERVICE_TOKEN_HEADER]


def test_each_fee_case_runs_beside_its_case_without_a_fee_level_by_level():
    """What a fee costs is judged by comparing a case with a fee to the same case without one
    (benchtargets' fee verdicts), and every case grows the ledger (the batch cases by ~500,000
    rows), so the two run side by side on the same tables: each level of a fee case right after
    the same level of its case without a fee (round 18: run after the batch cases, the same code
    had shown a Reserve+Confirm fee costing 26%, against 1% and 6% side by side). Every case
    still runs at each of its levels once."""
    stub = type("Stub", (), {n: None for n in ("Transfer", "ReserveHold", "ConfirmHold")})()
    fixture = Fixture(stub, pairs=1, sign=Signer("wallet", _MINTER))  # type: ignore[arg-type]
    fixture.payers, fixture.payees, fixture.revenue, fixture.hot_unsharded = ["p"], ["q"], "r", "u"
    levels = (1, 8, 32)
    grouped, ungrouped = object(), object()
    groups = bench_wallet.case_groups(fixture, stub, grouped, ungrouped, levels)  # type: ignore[arg-type]
    order = [(name, level) for name, _, level, _, _ in bench_wallet.schedule(groups)]
    expected = {(name, level) for group in groups for name, _, ls, _, _ in group for level in ls}
    assert sorted(order) == sorted(expected) and len(order) == len(expected)
    for fee, plain, fee_levels in (
        ("reserve+confirm, fee to revenue", "reserve+confirm", levels),
        ("transfer, fee to revenue", "transfer (grouped)", levels),
        ("transfer, fee to unsharded acct", "transfer, fee to revenue", (8, 32)),
    ):
        for level in fee_levels:
            at = order.index((fee, level))
            assert order[at - 1] == (plain, level), (fee, level, order)
    # The wallet's targets name the cases these pairs compare.
    assert {benchtargets.RESERVE_CONFIRM_FEE, benchtargets.TRANSFER_FEE} <= {n for n, _ in order}
    assert {benchtargets.RESERVE_CONFIRM, benchtargets.TRANSFER} <= {n for n, _ in order}
