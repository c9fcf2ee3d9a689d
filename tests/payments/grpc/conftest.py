"""Fixtures of the payouts tests (ESC-9): each module starts its own `stack`
(tests.support.payouts_stack); these reach its payments service as the gateway does and its
wallet as payments does. The reconciliation tests (OPS-3) each start their own
`reconciling_service` and call it as jobs does (`jobs_stub`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from hirepay_dev.services import RunningService
from tests.support.payouts_stack import Stack
from tests.support.service_auth import signed_aio_channel
from tests.support.stripe_stack import payments_stub_as_jobs


@pytest.fixture(autouse=True)
def _no_payout_faults_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests on a payouts stack start and end without armed sandbox faults."""
    if "stack" not in request.fixturenames:
        yield
        return
    stack: Stack = request.getfixturevalue("stack")
    stack.admin.clear_faults()
    yield
    stack.admin.clear_faults()


@pytest.fixture
async def payments(stack: Stack) -> AsyncIterator[pb_grpc.PaymentsServiceStub]:
    async with grpc.aio.insecure_channel(stack.payments.target) as channel:
        yield pb_grpc.PaymentsServiceStub(channel)


@pytest.fixture
async def wallet(stack: Stack) -> AsyncIterator[wpb_grpc.WalletServiceStub]:
    async with signed_aio_channel(stack.wallet.target, caller="payments", service="wallet") as ch:
        yield wpb_grpc.WalletServiceStub(ch)


@pytest.fixture
async def jobs_stub(
    reconciling_service: RunningService,
) -> AsyncIterator[pb_grpc.PaymentsServiceStub]:
    """The module's own payments process (`reconciling_service`), called as jobs calls it."""
    async with payments_stub_as_jobs(reconciling_service) as stub:
        yield stub
