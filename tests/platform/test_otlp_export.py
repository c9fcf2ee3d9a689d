"""Issue 12 §4: spans leave a real service over OTLP, configured only by the standard OTEL_*
variables, and reach a collector (a tiny OTLP/gRPC receiver on 127.0.0.1 inside the test)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from hirepay.wallet.v1 import wallet_service_pb2 as pb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as pb_grpc
from hirepay_dev.services import WALLET, start_service
from tests.support.service_auth import signed_channel


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every exported span as (service.name, span) pairs."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, object]] = []
        self._lock = threading.Lock()

    def Export(self, request, context):
        with self._lock:
            for resource_spans in request.resource_spans:
                attributes = {
                    a.key: a.value.string_value for a in resource_spans.resource.attributes
                }
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.spans.append((attributes.get("service.name", ""), span))
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[Collector, int]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    receiver = Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield receiver, port
    server.stop(0)


def _wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


@pytest.mark.parametrize("trace_sql", [True, False], ids=["sql-on", "sql-off"])
def test_a_service_exports_its_rpc_and_sql_spans_over_otlp(
    collector, make_service_database, monkeypatch, trace_sql
) -> None:
    """One SERVER span per RPC (the OpenTelemetry gRPC instrumentation's); SQL statement spans
    only when HIREPAY_TRACE_SQL is on (off by default: they cost CPU on every query)."""
    receiver, port = collector
    monkeypatch.delenv("HIREPAY_TRACES", raising=False)
    service = start_service(
        WALLET,
        make_service_database("wallet"),
        env={
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_SERVICE_NAME": "wallet-otlp-test",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "HIREPAY_TRACE_SQL": "true" if trace_sql else "false",
        },
        log_name="wallet-otlp",
    )
    try:
        with signed_channel(service.target, caller="jobs", service="wallet") as channel:
            pb_grpc.WalletServiceStub(channel).OpenAccount(
                pb.OpenAccountRequest(
                    request_id="otlp-1",
                    owner_id="otlp-user",
                    currency="USD",
                    kind=pb.ACCOUNT_KIND_USER,
                ),
                timeout=10,
            )

        def rpc_spans() -> list[object]:
            return [
                span
                for name, span in list(receiver.spans)
                if name == "wallet-otlp-test"
                and span.name == "/hirepay.wallet.v1.WalletService/OpenAccount"
            ]

        _wait_for(lambda: bool(rpc_spans()))
        [rpc] = rpc_spans()  # one server span per RPC, not two
        assert rpc.kind == rpc.SPAN_KIND_SERVER

        def sql_spans() -> list[object]:
            return [
                span
                for _, span in list(receiver.spans)
                if span.trace_id == rpc.trace_id
                and any(a.key == "db.system" or a.key == "db.system.name" for a in span.attributes)
            ]

        if trace_sql:
            # The statements the RPC ran are spans of the same trace (SQLAlchemy instrumentation).
            _wait_for(lambda: bool(sql_spans()))
        else:
            # Statement spans end before the RPC's and are exported no later: none came.
            assert sql_spans() == []
    finally:
        service.stop()


@pytest.mark.parametrize(
    "method",
    [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/hirepay.wallet.v1.WalletService/Transfer",
        "/hirepay.jobs.v1.JobsService/CreateJobWithPayment",
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    ],
)
def test_the_rpc_filter_decides_as_opentelemetrys_own(method: str) -> None:
    """Issue 13 replaced OpenTelemetry's filter combinators (costly per call) by one function:
    the same RPCs are traced, on client calls (bytes names) and served ones (str names)."""
    from opentelemetry.instrumentation.grpc.filters import (
        any_of,
        health_check,
        negate,
        service_prefix,
    )

    from hirepay_platform.tracing import traced_rpc

    theirs = negate(any_of(health_check(), service_prefix("grpc.reflection")))
    client = grpc.aio.ClientCallDetails(method.encode(), None, None, None, None)
    served = type("Served", (), {"method": method})()
    assert traced_rpc(client) == theirs(client)
    assert traced_rpc(served) == theirs(served)
    assert traced_rpc(client) == (not method.startswith(("/grpc.health", "/grpc.reflection")))
