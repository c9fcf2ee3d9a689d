"""The wallet as a real process for the gRPC tests: one per test module, on the module's database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from hirepay.wallet.v1 import wallet_service_pb2_grpc as pb_grpc
from hirepay_dev.services import WALLET, RunningService, start_service
from tests.support.service_auth import signed_aio_channel
from tests.support.wallet_grpc import Client


@pytest.fixture(scope="module")
def wallet(wallet_db_url: str) -> Iterator[RunningService]:
    service = start_service(
        WALLET,
        wallet_db_url,
        env={"WALLET_HOLD_EXPIRY_INTERVAL_SECONDS": "0.2", "WALLET_DB_POOL_SIZE": "20"},
        log_name="wallet-grpc-test",
    )
    yield service
    service.stop()


@pytest.fixture(scope="module")
async def channel(wallet: RunningService) -> AsyncIterator[grpc.aio.Channel]:
    """Calls signed as jobs (an internal caller)."""
    async with signed_aio_channel(wallet.target, caller="jobs", service="wallet") as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel: grpc.aio.Channel) -> pb_grpc.WalletServiceStub:
    return pb_grpc.WalletServiceStub(channel)


@pytest.fixture
def client(stub) -> Client:
    return Client(stub)
