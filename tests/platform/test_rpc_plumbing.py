"""The per-call plumbing made cheaper in issue 13 still does all it did: metric series looked up
once still count every call (server and client side), servicer methods wrapped at registration
(not intercepted per call) are still authenticated, checked and mapped, also when a servicer
registers only generic handlers, a request's text is screened as it is decoded (forbidden text
at any depth still refused, only after the caller is authenticated), remembered trace contexts
are the ones a call carries and is made in, and the processes run on uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry import baggage, trace
from prometheus_client import REGISTRY, Counter, Histogram

from hirepay.wallet.v1 import wallet_service_pb2 as pb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as pb_grpc
from hirepay_dev.procs import ensure_service_token_secret, free_port
from hirepay_platform import eventloop, metrics, tracing
from hirepay_platform.client import ServiceClient
from hirepay_platform.errors import NotFound, RemoteError
from hirepay_platform.identity import TokenMinter
from hirepay_platform.server import GrpcApp, PlatformInterceptor
from hirepay_platform.settings import ServiceSettings


class _Wallet(pb_grpc.WalletServiceServicer):
    async def GetAccount(self, request: Any, context: Any) -> Any:
        if request.account_id == "missing":
            raise NotFound("no such account", reason="ACCOUNT_NOT_FOUND")
        return pb.GetAccountResponse(account=pb.Account(account_id=request.account_id))

    async def CreateTransfers(self, request: Any, context: Any) -> Any:
        # Answers how many transfers it was handed: the screened request reached the servicer.
        return pb.CreateTransfersResponse(
            results=[pb.CreateTransfersResult() for _ in request.transfers]
        )


def _generic_only(servicer: Any, server: Any) -> None:
    """Registers GetAccount and CreateTransfers as older generated code does: a generic handler
    only."""
    handlers = {
        "GetAccount": grpc.unary_unary_rpc_method_handler(
            servicer.GetAccount,
            request_deserializer=pb.GetAccountRequest.FromString,
            response_serializer=pb.GetAccountResponse.SerializeToString,
        ),
        "CreateTransfers": grpc.unary_unary_rpc_method_handler(
            servicer.CreateTransfers,
            request_deserializer=pb.CreateTransfersRequest.FromString,
            response_serializer=pb.CreateTransfersResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("hirepay.wallet.v1.WalletService", handlers),)
    )


async def _serve(name: str, add: Any) -> AsyncIterator[str]:
    settings = ServiceSettings(
        grpc_port=free_port(),
        metrics_port=free_port(),
        database_url="postgresql://unused",
        shutdown_grace_seconds=1,
        HIREPAY_SERVICE_TOKEN_SECRET=ensure_service_token_secret(),
    )
    app = GrpcApp(name, settings)
    app.add_service(add, _Wallet(), "hirepay.wallet.v1.WalletService")
    stop = asyncio.Event()
    task = asyncio.create_task(app.serve(stop))
    for _ in range(250):
        if app.port:
            break
        await asyncio.sleep(0.02)
    yield f"127.0.0.1:{settings.grpc_port}"
    stop.set()
    await task


# name -> how its servicer is registered: generated code (registered and generic handlers), or a
# generic handler only (older generated code).
_REGISTRATIONS = {
    "plumbwallet": pb_grpc.add_WalletServiceServicer_to_server,
    "plumbgeneric": _generic_only,
}


@pytest.fixture(params=sorted(_REGISTRATIONS))
async def served(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    """(service name, target) of a GrpcApp serving the wallet stand-in."""
    async for target in _serve(request.param, _REGISTRATIONS[request.param]):
        yield request.param, target


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_remembered_series_is_the_labelled_one() -> None:
    series = metrics.child(metrics.RPC_REQUESTS, "plumb", "Method", "OK")
    assert series is metrics.RPC_REQUESTS.labels("plumb", "Method", "OK")
    assert metrics.child(metrics.RPC_REQUESTS, "plumb", "Method", "OK") is series
    before = _sample("hirepay_rpc_requests_total", service="plumb", method="Method", code="OK")
    series.inc()
    metrics.child(metrics.RPC_REQUESTS, "plumb", "Method", "OK").inc()
    after = _sample("hirepay_rpc_requests_total", service="plumb", method="Method", code="OK")
    assert after == before + 2


def _histogram(service: str, method: str) -> list[float]:
    """Every sample of one hirepay_rpc_duration_seconds series: its buckets, count and sum."""
    labels = {"service": service, "method": method}
    bounds = [*(str(b) for b in metrics.RPC_LATENCY._upper_bounds[:-1]), "+Inf"]
    return [
        *(_sample("hirepay_rpc_duration_seconds_bucket", **labels, le=le) for le in bounds),
        _sample("hirepay_rpc_duration_seconds_count", **labels),
        _sample("hirepay_rpc_duration_seconds_sum", **labels),
    ]


def test_the_hot_path_counts_exactly_what_inc_and_observe_count() -> None:
    """metrics.incrementer/observer (every RPC) update the very series the public inc/observe
    do, the same way: a count of one, and each amount in the first bucket that holds it (bounds
    themselves, between them, above the last, zero) and in the sum."""
    amounts = [0.0, 0.0005, 0.001, 0.0011, 0.0025, 0.3, 1, 10, 10.5, 120.0]
    public = metrics.child(metrics.RPC_LATENCY, "plumb", "Public")
    fast = metrics.observer(metrics.child(metrics.RPC_LATENCY, "plumb", "Fast"))
    for amount in amounts:
        public.observe(amount)
        fast(amount)
    assert _histogram("plumb", "Fast") == _histogram("plumb", "Public")
    assert _histogram("plumb", "Fast")[-2:] == [len(amounts), sum(amounts)]
    increment = metrics.incrementer(metrics.child(metrics.RPC_REQUESTS, "plumb", "Fast", "OK"))
    labels = {"service": "plumb", "method": "Fast", "code": "OK"}
    before = _sample("hirepay_rpc_requests_total", **labels)
    increment()
    increment()
    metrics.child(metrics.RPC_REQUESTS, "plumb", "Fast", "OK").inc()
    assert _sample("hirepay_rpc_requests_total", **labels) == before + 3


def test_count_and_observe_update_the_series_inc_and_observe_update() -> None:
    """metrics.count/observe (the gateway's every request): the labelled series, or the metric
    itself without labels, counted as `labels(...).inc()` / `observe` count it."""
    labels = {"service": "plumb", "method": "Counted", "code": "OK"}
    before = _sample("hirepay_rpc_requests_total", **labels)
    metrics.count(metrics.RPC_REQUESTS, "plumb", "Counted", "OK")
    metrics.count(metrics.RPC_REQUESTS, "plumb", "Counted", "OK")
    assert _sample("hirepay_rpc_requests_total", **labels) == before + 2
    for amount in (0.0005, 0.3, 120.0):
        metrics.observe(metrics.RPC_LATENCY, amount, "plumb", "Counted")
        metrics.child(metrics.RPC_LATENCY, "plumb", "Public2").observe(amount)
    assert _histogram("plumb", "Counted") == _histogram("plumb", "Public2")
    plain = Counter("hirepay_plumb_plain_total", "An unlabelled counter.")
    metrics.count(plain)
    metrics.count(plain)
    assert REGISTRY.get_sample_value("hirepay_plumb_plain_total") == 2
    plain_time = Histogram("hirepay_plumb_plain_seconds", "An unlabelled histogram.")
    metrics.observe(plain_time, 0.3)
    metrics.observe(plain_time, 0.3)
    assert REGISTRY.get_sample_value("hirepay_plumb_plain_seconds_count") == 2
    assert REGISTRY.get_sample_value("hirepay_plumb_plain_seconds_sum") == 0.6


async def _calls(target: str, service: str, ids: list[str]) -> list[str]:
    """GetAccount for each id through ServiceClient; the reason of each failure, "" if none."""
    client = ServiceClient(
        service, target, minter=TokenMinter("jobs", ensure_service_token_secret())
    )
    stub = pb_grpc.WalletServiceStub(client.channel)
    reasons = []
    for account in ids:
        try:
            await client.call(stub.GetAccount, pb.GetAccountRequest(account_id=account))
            reasons.append("")
        except RemoteError as exc:
            reasons.append(exc.reason)
    await client.close()
    return reasons


async def test_every_call_is_counted_on_both_sides(served: tuple[str, str]) -> None:
    service, target = served
    server = {"service": service, "method": "GetAccount"}
    client = {"target": service, "method": "GetAccount"}

    def counts() -> tuple[float, ...]:
        return (
            _sample("hirepay_rpc_requests_total", **server, code="OK"),
            _sample("hirepay_rpc_requests_total", **server, code="NOT_FOUND"),
            _sample("hirepay_rpc_duration_seconds_count", **server),
            _sample("hirepay_rpc_client_requests_total", **client, code="OK"),
            _sample("hirepay_rpc_client_requests_total", **client, code="NOT_FOUND"),
        )

    before = counts()
    reasons = await _calls(target, service, ["a1", "a2", "missing", "a3", "missing"])
    assert reasons == ["", "", "ACCOUNT_NOT_FOUND", "", "ACCOUNT_NOT_FOUND"]
    after = counts()
    assert [b - a for a, b in zip(before, after, strict=True)] == [3, 2, 5, 3, 2]


async def test_wrapped_methods_still_check_the_caller_and_the_text(
    served: tuple[str, str],
) -> None:
    service, target = served
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.WalletServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as unsigned:
            await stub.GetAccount(pb.GetAccountRequest(account_id="a1"), timeout=5)
        # The caller is authenticated before the request's text is judged.
        with pytest.raises(grpc.aio.AioRpcError) as unsigned_bad_text:
            await stub.CreateTransfers(_transfers(("re\x00nt", "march")), timeout=5)
    assert unsigned.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert unsigned_bad_text.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await _calls(target, service, ["bad\x00id"]) == ["VALIDATION_FAILED"]


def _transfers(*texts: tuple[str, str]) -> pb.CreateTransfersRequest:
    """A CreateTransfers request of one transfer per (description, metadata value)."""
    return pb.CreateTransfersRequest(
        request_id="r1",
        transfers=[
            pb.TransferRequest(
                transfer_id=f"t{i}",
                legs=[pb.TransferLeg(from_account_id="a", to_account_id="b")],
                description=description,
                metadata={"note": value},
            )
            for i, (description, value) in enumerate(texts)
        ],
    )


async def _create_transfers(
    target: str, service: str, request: pb.CreateTransfersRequest
) -> tuple[int, str]:
    """(results answered, "") or (-1, the failure's reason) of one CreateTransfers call."""
    client = ServiceClient(
        service, target, minter=TokenMinter("jobs", ensure_service_token_secret())
    )
    stub = pb_grpc.WalletServiceStub(client.channel)
    try:
        response = await client.call(stub.CreateTransfers, request)
        return len(response.results), ""
    except RemoteError as exc:
        return -1, exc.reason
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        # No 0x00 byte in the encoding: decoded and served without a walk of its fields.
        (_transfers(("rent", "march"), ("fee", "april")), (2, "")),
        # A NUL deep in a repeated message's map value, or in its plain string field.
        (_transfers(("rent", "march"), ("fee", "apr\x00il")), (-1, "VALIDATION_FAILED")),
        (_transfers(("re\x00nt", "march")), (-1, "VALIDATION_FAILED")),
        # A 0x00 byte that is no text (an empty nested message): walked, and served.
        (
            pb.CreateTransfersRequest(
                transfers=[pb.TransferRequest(legs=[pb.TransferLeg(amount={})])]
            ),
            (1, ""),
        ),
    ],
)
async def test_forbidden_text_is_refused_wherever_it_is(
    served: tuple[str, str], request_: pb.CreateTransfersRequest, expected: tuple[int, str]
) -> None:
    service, target = served
    if expected == (1, ""):
        assert b"\x00" in request_.SerializeToString()
    assert await _create_transfers(target, service, request_) == expected


def test_the_screened_decoder_refuses_only_forbidden_text() -> None:
    """The wrapped handler's decoder (what the server decodes each request with) hands on a
    clean request as decoded, and marks one holding a NUL at any depth."""
    from hirepay_platform import identity

    platform = PlatformInterceptor(
        "plumb", identity.ServiceAuthenticator("plumb", ensure_service_token_secret())
    )
    handler = grpc.unary_unary_rpc_method_handler(
        _Wallet().CreateTransfers,
        request_deserializer=pb.CreateTransfersRequest.FromString,
        response_serializer=pb.CreateTransfersResponse.SerializeToString,
    )
    decode = platform.wrap_handler(handler, "CreateTransfers").request_deserializer
    clean = _transfers(("rent", "march"))
    assert decode(clean.SerializeToString()) == clean
    refused = decode(_transfers(("rent", "ma\x00rch")).SerializeToString())
    assert not isinstance(refused, pb.CreateTransfersRequest)
    assert (refused.field, refused.problem) == (
        "transfers.metadata",
        "must not contain NUL characters",
    )


def test_processes_run_on_uvloop() -> None:
    async def which() -> bool:
        return eventloop.uses_uvloop()

    assert eventloop.run(which()) is True
    assert eventloop.run(which(), loop="asyncio") is False
    with pytest.raises(ValueError):
        eventloop.run(which(), loop="trio")


_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _trace_of(metadata: list[tuple[str, str]]) -> tuple[int, int]:
    span = trace.get_current_span(tracing.incoming_context(metadata)).get_span_context()
    return span.trace_id, span.span_id


def test_calls_of_one_trace_continue_it_and_others_begin_their_own() -> None:
    """Remembered contexts (tracing.incoming_context) change nothing: a call continues the trace
    it carries, baggage included; calls carrying none, or an invalid one, each begin a new one."""
    token = [("x-hirepay-service-token", "t1")]
    first = tracing.incoming_context([*token, ("traceparent", _PARENT), ("baggage", "k=v")])
    again = tracing.incoming_context([("traceparent", _PARENT), ("baggage", "k=v"), *token])
    assert _trace_of([("traceparent", _PARENT)]) == (
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
    )
    assert again is first  # remembered, not parsed again
    assert baggage.get_baggage("k", first) == "v"
    assert baggage.get_baggage("k", tracing.incoming_context([("traceparent", _PARENT)])) is None
    other = "00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203331-01"
    assert _trace_of([("traceparent", other)])[0] == 0x0AF7651916CD43DD8448EB211C80319D
    for carried in ([], [("traceparent", "00-not-a-trace-01")]):
        begun = {_trace_of([*token, *carried])[0] for _ in range(3)}
        assert len(begun) == 3 and 0 not in begun


def test_calls_carry_the_context_they_are_made_in() -> None:
    """Remembered metadata (tracing.outgoing_context) is what the propagator injects for the
    context current at each call: none outside a trace, the trace and baggage inside one, and a
    new context's own once it is attached (never the previous one's)."""
    from opentelemetry import context as otel_context
    from opentelemetry import propagate

    def injected() -> tuple[tuple[str, str], ...]:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return tuple(carrier.items())

    assert tracing.outgoing_context() == injected() == ()
    seen = set()
    for traceparent in (_PARENT, "00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203331-01"):
        for bag in ("k=v", "k=w"):
            carried = [("traceparent", traceparent), ("baggage", bag)]
            token = otel_context.attach(tracing.incoming_context(carried))
            try:
                assert tracing.outgoing_context() == tracing.outgoing_context() == injected()
                assert dict(tracing.outgoing_context())["traceparent"] == traceparent
                seen.add(tracing.outgoing_context())
            finally:
                otel_context.detach(token)
            assert tracing.outgoing_context() == ()
    assert len(seen) == 4


async def test_a_client_sends_each_call_its_own_tokens_and_context() -> None:
    """ServiceClient reuses the Metadata it made for the same items (issue 13), and only then:
    each call carries the service token, the actor assertion of the user it is made for and the
    trace context it is made in, never another call's."""
    from opentelemetry import context as otel_context

    from hirepay_platform import identity

    minter = TokenMinter("gateway", ensure_service_token_secret())
    client = ServiceClient("wallet", "127.0.0.1:1", minter=minter)
    sent: list[grpc.aio.Metadata] = []

    async def method(request: Any, *, timeout: float, metadata: grpc.aio.Metadata) -> str:
        sent.append(metadata)
        return "ok"

    async def call() -> list[tuple[str, str]]:
        await client.call(method, None)
        return list(sent[-1])

    token = (identity.SERVICE_TOKEN_HEADER, minter.service_token("wallet"))
    try:
        assert await call() == await call() == [token]
        assert sent[-1] is sent[-2]
        alice, bob = identity.Actor("alice", "company"), identity.Actor("bob", "company")
        for who in (alice, bob, alice):
            identity.act_for(who)
            assert await call() == [
                token,
                (identity.ACTOR_HEADER, minter.actor_assertion("wallet", who)),
            ]
        identity.act_for(None)
        for traceparent in (_PARENT, "00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203331-01"):
            attached = otel_context.attach(tracing.incoming_context([("traceparent", traceparent)]))
            try:
                assert await call() == await call() == [token, ("traceparent", traceparent)]
                assert sent[-1] is sent[-2]
            finally:
                otel_context.detach(attached)
        assert await call() == [token]
    finally:
        identity.act_for(None)
        await client.close()


def test_count_and_observe_count_into_the_labelled_series() -> None:
    """metrics.count/observe (services' business metrics, issue 13) count into the series that
    `labels(...).inc()` / `.observe()` count into, once per call."""
    labels = {"service": "plumb", "method": "Counted", "code": "OK"}
    before = _sample("hirepay_rpc_requests_total", **labels)
    metrics.count(metrics.RPC_REQUESTS, "plumb", "Counted", "OK")
    metrics.count(metrics.RPC_REQUESTS, "plumb", "Counted", "OK")
    metrics.RPC_REQUESTS.labels("plumb", "Counted", "OK").inc()
    assert _sample("hirepay_rpc_requests_total", **labels) == before + 3
    amounts = [0.0, 0.001, 0.3, 20.0]
    for amount in amounts:
        metrics.observe(metrics.RPC_LATENCY, amount, "plumb", "Observed")
        metrics.RPC_LATENCY.labels("plumb", "ObservedPublic").observe(amount)
    assert _histogram("plumb", "Observed") == _histogram("plumb", "ObservedPublic")
    assert _histogram("plumb", "Observed")[-2:] == [len(amounts), sum(amounts)]
