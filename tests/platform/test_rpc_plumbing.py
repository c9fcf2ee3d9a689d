"""The per-call plumbing made cheaper in issue 13 still does all it did: metric series looked up
once still count every call (server and client side), servicer methods wrapped at registration
(not intercepted per call) are still authenticated, checked and mapped, also when a servicer
registers only generic handlers, and the processes run on uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from hirepay.wallet.v1 import wallet_service_pb2 as pb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as pb_grpc
from hirepay_dev.procs import ensure_service_token_secret, free_port
from hirepay_platform import eventloop, metrics
from hirepay_platform.client import ServiceClient
from hirepay_platform.errors import NotFound, RemoteError
from hirepay_platform.identity import TokenMinter
from hirepay_platform.server import GrpcApp
from hirepay_platform.settings import ServiceSettings


class _Wallet(pb_grpc.WalletServiceServicer):
    async def GetAccount(self, request: Any, context: Any) -> Any:
        if request.account_id == "missing":
            raise NotFound("no such account", reason="ACCOUNT_NOT_FOUND")
        return pb.GetAccountResponse(account=pb.Account(account_id=request.account_id))


def _generic_only(servicer: Any, server: Any) -> None:
    """Registers GetAccount as older generated code does: a generic handler only."""
    handlers = {
        "GetAccount": grpc.unary_unary_rpc_method_handler(
            servicer.GetAccount,
            request_deserializer=pb.GetAccountRequest.FromString,
            response_serializer=pb.GetAccountResponse.SerializeToString,
        )
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
    assert unsigned.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await _calls(target, service, ["bad\x00id"]) == ["VALIDATION_FAILED"]


def test_processes_run_on_uvloop() -> None:
    async def which() -> bool:
        return eventloop.uses_uvloop()

    assert eventloop.run(which()) is True
    assert eventloop.run(which(), loop="asyncio") is False
    with pytest.raises(ValueError):
        eventloop.run(which(), loop="trio")
