"""Readiness over time (OPS-2): health follows the database while serving, and names what is down."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hirepay_dev.procs import Process, free_port, grpc_ready, http_ready, python_module
from hirepay_dev.services import WALLET, RunningService, start_service
from hirepay_platform.metrics import DEPENDENCY_UP
from hirepay_platform.readiness import unavailable_dependencies
from hirepay_platform.server import GrpcApp
from hirepay_platform.settings import ServiceSettings
from tests.support.pg_proxy import PostgresProxy
from tests.support.waiting import eventually

FAST_READINESS = {"READINESS_INTERVAL_SECONDS": "0.2", "READINESS_TIMEOUT_SECONDS": "1"}


class _Settings(ServiceSettings):
    pass


def dependencies_down(target: str) -> list[str]:
    async def ask() -> list[str]:
        async with grpc.aio.insecure_channel(target) as channel:
            return await unavailable_dependencies(channel, 2.0)

    return asyncio.run(ask())


async def test_health_flips_with_a_dependency_check_and_back() -> None:
    """In process: a failing check turns SERVING into NOT_SERVING naming it, and back."""
    settings = _Settings(
        grpc_port=free_port(),
        metrics_port=free_port(),
        database_url="postgresql://unused",
        readiness_interval_seconds=0.05,
    )
    app = GrpcApp("readiness-probe", settings)
    database_up = True

    async def check() -> None:
        if not database_up:
            raise ConnectionRefusedError("connection refused")

    app.add_readiness_check("database", check)
    stop = asyncio.Event()
    task = asyncio.create_task(app.serve(stop))
    try:
        for _ in range(200):
            if app.port is not None:
                break
            await asyncio.sleep(0.02)
        target = f"127.0.0.1:{app.port}"

        async def status() -> tuple[int, list[str]]:
            async with grpc.aio.insecure_channel(target) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                return reply.status, await unavailable_dependencies(channel, 2)

        async def wait_for(expected: int) -> list[str]:
            for _ in range(100):
                current, down = await status()
                if current == expected:
                    return down
                await asyncio.sleep(0.05)
            raise AssertionError(f"health never became {expected}")

        assert await wait_for(health_pb2.HealthCheckResponse.SERVING) == []
        database_up = False
        assert await wait_for(health_pb2.HealthCheckResponse.NOT_SERVING) == ["database"]
        assert DEPENDENCY_UP.labels("readiness-probe", "database")._value.get() == 0
        database_up = True
        assert await wait_for(health_pb2.HealthCheckResponse.SERVING) == []
        assert DEPENDENCY_UP.labels("readiness-probe", "database")._value.get() == 1
    finally:
        stop.set()
        await task
    # Shutting down still reports NOT_SERVING: the watcher no longer overrides it.
    reply = await app.health.Check(health_pb2.HealthCheckRequest(service=""), None)
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def proxy(pg_server_url: str) -> Iterator[PostgresProxy]:
    proxy = PostgresProxy(pg_server_url).start()
    yield proxy
    proxy.close()


def test_a_service_and_the_gateway_report_a_lost_database(
    make_service_database, proxy: PostgresProxy
) -> None:
    """A real wallet whose database goes away: NOT_SERVING naming `database`, the gateway's
    /readyz names the wallet and its database; both recover when the database returns."""
    url = make_service_database("wallet")
    env = {f"WALLET_{key}": value for key, value in FAST_READINESS.items()}
    cut_off: RunningService = start_service(WALLET, proxy.url_for(url), env=env)
    healthy: RunningService = start_service(WALLET, url, env=env)
    gateway_port = free_port()
    gateway = Process(
        name="gateway-readiness",
        argv=python_module("gateway"),
        env={
            "GATEWAY_ENV": "development",
            "GATEWAY_PORT": str(gateway_port),
            "GATEWAY_JOBS_TARGET": healthy.target,
            "GATEWAY_PAYMENTS_TARGET": healthy.target,
            "GATEWAY_WALLET_TARGET": cut_off.target,
        },
        ready=http_ready(f"http://127.0.0.1:{gateway_port}/healthz"),
    )
    try:
        gateway.start()
        readyz = f"http://127.0.0.1:{gateway_port}/readyz"
        eventually(lambda: httpx.get(readyz, timeout=5).status_code == 200)
        assert dependencies_down(cut_off.target) == []

        proxy.cut()
        eventually(lambda: not grpc_ready(cut_off.target)())
        assert dependencies_down(cut_off.target) == ["database"]
        answer = httpx.get(readyz, timeout=5)
        assert answer.status_code == 503
        body = answer.json()
        assert body["down"] == ["wallet"]
        assert body["backends"]["wallet"] == "NOT_SERVING"
        assert body["dependencies"] == {"wallet": ["database"]}
        assert "wallet (database down)" in body["message"]
        assert grpc_ready(healthy.target)()  # only the cut-off service is affected

        proxy.restore()
        eventually(grpc_ready(cut_off.target))
        assert dependencies_down(cut_off.target) == []
        eventually(lambda: httpx.get(readyz, timeout=5).status_code == 200)
        assert "dependency database is unavailable" in cut_off.process.tail(200)
    finally:
        gateway.stop()
        cut_off.stop()
        healthy.stop()
