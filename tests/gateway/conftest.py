"""Gateway test fixtures: fake gRPC backends in this process and the gateway as a real process.

The gateway runs as `python -m gateway` (uvicorn) on a free port and is called over HTTP with httpx.
Its backends are fake gRPC servers in the test's event loop, so tests must call the gateway with
the async client (a blocking call would stall the fakes it is waiting on).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.gateway_fakes import (
    FakeJobs,
    FakePayments,
    FakeWallet,
    start_jobs,
    start_payments,
    start_wallet,
)
from tests.support.gateway_harness import (
    AUDIENCE,
    ISSUER,
    KEYS,
    RATE_LIMIT,
    REDIRECT_ORIGINS,
    Backends,
    Gateway,
    start_gateway,
)


@pytest.fixture(scope="session")
async def backends() -> AsyncIterator[Backends]:
    jobs, payments, wallet = FakeJobs(), FakePayments(), FakeWallet()
    servers = [await start_jobs(jobs), await start_payments(payments), await start_wallet(wallet)]
    fakes = Backends(jobs, payments, *servers, wallet=wallet)
    yield fakes
    # A test may have replaced a server (stopped and restarted it): stop the current ones.
    for server in (fakes.jobs_server, fakes.payments_server, fakes.wallet_server):
        await server.server.stop(0)


@pytest.fixture(scope="session")
def gateway(backends: Backends, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The production-configured gateway: two rotation keys, no development key."""
    spans = tmp_path_factory.mktemp("traces") / "spans.jsonl"
    process, url = start_gateway(
        "gateway-tests",
        {
            "GATEWAY_ENV": "production",
            "GATEWAY_JWT_KEYS": json.dumps(KEYS),
            "GATEWAY_JWT_ISSUER": ISSUER,
            "GATEWAY_JWT_AUDIENCE": AUDIENCE,
            "GATEWAY_JOBS_TARGET": backends.jobs_server.target,
            "GATEWAY_PAYMENTS_TARGET": backends.payments_server.target,
            "GATEWAY_WALLET_TARGET": backends.wallet_server.target,
            "GATEWAY_RATE_LIMIT_PER_MINUTE": str(RATE_LIMIT),
            "GATEWAY_ALLOWED_REDIRECT_ORIGINS": REDIRECT_ORIGINS,
            "GATEWAY_RPC_TIMEOUT_SECONDS": "2",
            "GATEWAY_SAGA_TIMEOUT_SECONDS": "3",
            "HIREPAY_TRACES": f"file:{spans}",
        },
    )
    yield Gateway(url, process, spans)
    process.stop()


@pytest.fixture(autouse=True)
def _fresh_scripts(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts with the fakes' default behaviour and no recorded calls."""
    if "backends" not in request.fixturenames:
        yield
        return
    fakes: Backends = request.getfixturevalue("backends")
    for fake in (fakes.jobs, fakes.payments, fakes.wallet):
        fake.reset()
    yield
    for fake in (fakes.jobs, fakes.payments, fakes.wallet):
        fake.reset()


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as http:
        yield http
