"""Platform library: error mapping over real gRPC, health and shutdown, client retries, settings, logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from hirepay.wallet.v1 import wallet_service_pb2 as pb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as pb_grpc
from hirepay_dev.procs import free_port
from hirepay_platform import money, tracing
from hirepay_platform.client import ServiceClient
from hirepay_platform.errors import ErrorKind, NotFound, RemoteError, ValidationError
from hirepay_platform.logs import JsonFormatter, mask_secrets
from hirepay_platform.metrics import RPC_REQUESTS
from hirepay_platform.server import GrpcApp
from hirepay_platform.settings import ServiceSettings, load_settings
from tests.support.service_auth import signed_aio_channel


class _Settings(ServiceSettings):
    pass


class FakeWallet(pb_grpc.WalletServiceServicer):
    """Behaviours the interceptor must map: a domain error, a crash, a slow call, flaky UNAVAILABLE."""

    def __init__(self) -> None:
        self.unavailable_left = 0
        self.calls = 0
        # The slow call is held until the test lets it go (at most 5 s, so every test ends).
        self.slow_entered = asyncio.Event()
        self.slow_release = asyncio.Event()
        # The trace context each GetAccount ran in (what its logs carry as trace_id).
        self.seen_traces: list[SpanContext] = []

    async def GetAccount(self, request, context):
        self.calls += 1
        self.seen_traces.append(trace.get_current_span().get_span_context())
        if request.account_id == "missing":
            raise NotFound(
                "no such account", reason="ACCOUNT_NOT_FOUND", metadata={"id": "missing"}
            )
        if request.account_id == "boom":
            raise RuntimeError("secret sk_test_abc123 leaked in a crash")
        if request.account_id == "slow":
            self.slow_entered.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.slow_release.wait(), 5)
        return pb.GetAccountResponse(account=pb.Account(account_id=request.account_id))

    async def OpenAccount(self, request, context):
        self.calls += 1
        if self.unavailable_left > 0:
            self.unavailable_left -= 1
            raise RemoteError("db down", reason="UNAVAILABLE", kind=ErrorKind.UNAVAILABLE)
        return pb.OpenAccountResponse(account=pb.Account(owner_id=request.owner_id), created=True)


@pytest.fixture
async def app_server():
    settings = _Settings(
        grpc_port=free_port(),
        metrics_port=free_port(),
        database_url="postgresql://unused",
        shutdown_grace_seconds=2,
    )
    app = GrpcApp("fakewallet", settings)
    servicer = FakeWallet()
    app.add_service(
        pb_grpc.add_WalletServiceServicer_to_server, servicer, "hirepay.wallet.v1.WalletService"
    )
    stop = asyncio.Event()
    task = asyncio.create_task(app.serve(stop))
    target = f"127.0.0.1:{settings.grpc_port}"
    for _ in range(100):
        if app.port:
            break
        await asyncio.sleep(0.02)
    yield app, servicer, target, stop
    stop.set()
    await task


async def test_domain_error_becomes_status_with_error_info(app_server) -> None:
    _, _, target, _ = app_server
    client = ServiceClient("fakewallet", target)
    stub = pb_grpc.WalletServiceStub(client.channel)
    with pytest.raises(RemoteError) as caught:
        await client.call(stub.GetAccount, pb.GetAccountRequest(account_id="missing"))
    assert caught.value.kind is ErrorKind.NOT_FOUND
    assert caught.value.reason == "ACCOUNT_NOT_FOUND"
    assert caught.value.metadata == {"id": "missing"}
    before = RPC_REQUESTS.labels("fakewallet", "GetAccount", "NOT_FOUND")._value.get()
    assert before >= 1
    await client.close()


async def test_without_exported_spans_the_trace_context_still_crosses_the_hop(app_server) -> None:
    """A process that exports no spans installs no OpenTelemetry gRPC interceptors (issue 13),
    yet a handler still runs in its caller's trace, so the logs of both sides join up; a call
    outside any trace begins a new one, as the server span did."""
    _, servicer, target, _ = app_server
    assert not tracing.exporting()
    client = ServiceClient("fakewallet", target)
    stub = pb_grpc.WalletServiceStub(client.channel)
    caller = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(caller)))
    try:
        await client.call(stub.GetAccount, pb.GetAccountRequest(account_id="a1"))
    finally:
        otel_context.detach(token)
    await client.call(stub.GetAccount, pb.GetAccountRequest(account_id="a2"))
    joined, fresh = servicer.seen_traces
    assert joined.trace_id == caller.trace_id and joined.span_id == caller.span_id
    assert joined.is_remote
    assert fresh.is_valid and fresh.trace_id != caller.trace_id
    await client.close()


async def test_unknown_error_is_internal_with_generic_message(app_server, caplog) -> None:
    _, _, target, _ = app_server
    async with signed_aio_channel(target, caller="jobs", service="fakewallet") as channel:
        stub = pb_grpc.WalletServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetAccount(pb.GetAccountRequest(account_id="boom"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "internal error"
    assert "sk_test" not in (caught.value.details() or "")


async def test_retry_only_with_request_id(app_server) -> None:
    _, servicer, target, _ = app_server
    client = ServiceClient("fakewallet", target, backoff=0.01)
    stub = pb_grpc.WalletServiceStub(client.channel)
    servicer.unavailable_left, servicer.calls = 2, 0
    reply = await client.call(
        stub.OpenAccount, pb.OpenAccountRequest(request_id="r1", owner_id="u1")
    )
    assert reply.account.owner_id == "u1" and servicer.calls == 3
    servicer.unavailable_left, servicer.calls = 1, 0
    with pytest.raises(RemoteError) as caught:
        await client.call(stub.OpenAccount, pb.OpenAccountRequest(owner_id="u1"))
    assert caught.value.kind is ErrorKind.UNAVAILABLE and servicer.calls == 1
    await client.close()


async def test_every_call_has_a_deadline(app_server) -> None:
    _, servicer, target, _ = app_server
    client = ServiceClient("fakewallet", target, timeout=0.1)
    stub = pb_grpc.WalletServiceStub(client.channel)
    with pytest.raises(RemoteError) as caught:
        await client.call(stub.GetAccount, pb.GetAccountRequest(account_id="slow"))
    assert caught.value.kind is ErrorKind.DEADLINE_EXCEEDED
    servicer.slow_release.set()
    await client.close()


async def test_health_serving_then_not_serving_and_inflight_call_finishes(app_server) -> None:
    app, servicer, target, stop = app_server
    async with signed_aio_channel(target, caller="jobs", service="fakewallet") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(
            health_pb2.HealthCheckRequest(service="hirepay.wallet.v1.WalletService"), timeout=2
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = pb_grpc.WalletServiceStub(channel)
        inflight = asyncio.ensure_future(
            stub.GetAccount(pb.GetAccountRequest(account_id="slow"), timeout=5)
        )
        await asyncio.wait_for(servicer.slow_entered.wait(), 5)
        stop.set()
        for _ in range(100):
            status = await app.health.Check(health_pb2.HealthCheckRequest(service=""), None)
            if status.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            await asyncio.sleep(0.02)
        assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert not inflight.done()
        servicer.slow_release.set()
        reply = await inflight  # graceful: the in-flight call completes
        assert reply.account.account_id == "slow"


def test_metrics_endpoint_serves_rpc_metrics() -> None:
    from hirepay_platform.metrics import serve_metrics

    port = free_port()
    serve_metrics(port, host="127.0.0.1")
    RPC_REQUESTS.labels("probe", "Ping", "OK").inc()
    body = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'hirepay_rpc_requests_total{code="OK",method="Ping",service="probe"}' in body


def test_settings_fail_fast_naming_the_variable(monkeypatch, capsys) -> None:
    from pydantic_settings import SettingsConfigDict

    class WalletLike(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="PROBE_")

    monkeypatch.setenv("PROBE_GRPC_PORT", "1")
    monkeypatch.setenv("PROBE_METRICS_PORT", "2")
    monkeypatch.delenv("PROBE_DATABASE_URL", raising=False)
    with pytest.raises(SystemExit):
        load_settings(WalletLike)
    assert "PROBE_DATABASE_URL" in capsys.readouterr().err
    monkeypatch.setenv("PROBE_DATABASE_URL", "postgresql://u:pw@h/db")
    settings = load_settings(WalletLike)
    assert "pw" not in repr(settings)


@pytest.mark.parametrize(
    "raw",
    [
        "key sk_test_51Habc123XYZ",
        "hook whsec_abcdef012345",
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig",
        "card 4242 4242 4242 4242 and 4000000000000002",
        "url postgresql://postgres:hunter2@db/x",
        'cvc="123"',
    ],
)
def test_log_masking(raw: str) -> None:
    masked = mask_secrets(raw)
    for secret in (
        "51Habc123XYZ",
        "abcdef012345",
        "eyJzdWIiOiJ4In0",
        "4242 4242",
        "4000000000000002",
        "hunter2",
        '"123"',
    ):
        assert secret not in masked


def test_json_log_line_masks_exceptions() -> None:
    formatter = JsonFormatter("svc")
    try:
        raise ValueError("bad key sk_live_abcdef")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "oops %s", ("whsec_zz9",), sys.exc_info()
        )
    line = json.loads(formatter.format(record))
    assert line["msg"] == "oops whsec_***" and "sk_live_abcdef" not in line["exc"]


def test_money_rules() -> None:
    assert money.exponent("JPY") == 0 and money.exponent("USD") == 2 and money.exponent("KWD") == 3
    assert money.Money(3000, "USD").to_decimal_string() == "30.00"
    assert money.Money(1234, "KWD").to_decimal_string() == "1.234"
    assert money.Money(500, "JPY").to_decimal_string() == "500"
    assert money.validate_unit("COIN") == "COIN"
    for bad in ("usd", "XXX", "", "DOGE"):
        with pytest.raises(ValidationError):
            money.validate_unit(bad)
    with pytest.raises(ValidationError):
        money.validate_unit("COIN", cash_only=True)
    for bad_amount in (0, -1, 10**16, True, 1.5):
        with pytest.raises(ValidationError):
            money.validate_amount(bad_amount)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["acc\x00ount", "\x00"])
async def test_nul_in_any_string_field_is_invalid_argument_before_the_servicer(
    app_server, bad: str
) -> None:
    # A direct gRPC call is as untrusted as an HTTP request: the one interceptor refuses text the
    # database could not hold, so no servicer (and no SQL) ever sees it.
    _, servicer, target, _ = app_server
    client = ServiceClient("fakewallet", target)
    stub = pb_grpc.WalletServiceStub(client.channel)
    servicer.calls = 0
    with pytest.raises(RemoteError) as caught:
        await client.call(stub.GetAccount, pb.GetAccountRequest(account_id=bad))
    assert caught.value.kind is ErrorKind.INVALID_ARGUMENT
    assert caught.value.reason == "VALIDATION_FAILED"
    assert caught.value.metadata == {"account_id": "must not contain NUL characters"}
    assert servicer.calls == 0
    await client.close()
