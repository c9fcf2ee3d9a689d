"""ReconcileProvider against a provider as slow as real Stripe (OPS-3): ~300 ms on every call.

The consistency auditor asks for the 100 most recently changed payments with its 10 s RPC
deadline. Checked one after another (a retrieve and a refunds list per captured payment), 41
payments take ~25 s and the round fails with DEADLINE_EXCEEDED; checked a bounded number at a
time they fit, and a planted mismatch is still found."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay_dev.sandbox_client import SandboxAdmin, stripe_client
from hirepay_dev.services import RunningService
from tests.support.payments_helpers import WEBHOOK_SECRET, authorize_request, branch
from tests.support.service_auth import signed_aio_channel
from tests.support.stripe_stack import start_payments

API_KEY = "sk_test_reconcileslow"
CAPTURED = 40
LATENCY_MS = 300  # real Stripe's typical answer time
AUDITOR_DEADLINE = 10.0  # jobs' rpc_timeout_seconds, the auditor's deadline for the call


@pytest.fixture(scope="module")
def reconciling_service(
    make_service_database: Callable[[str], str], sandbox_url: str
) -> Iterator[RunningService]:
    """A payments process of its own: its most recently changed payments are this module's."""
    service = start_payments(
        make_service_database("payments"),
        sandbox_url,
        api_key=API_KEY,
        webhook_secrets=WEBHOOK_SECRET,
        provider_timeout=2.0,
        log_name="payments-reconcile-slow",
        PAYMENTS_LOG_LEVEL="INFO",
        PAYMENTS_WALLET_TARGET="",
    )
    yield service
    service.stop()


@pytest.fixture
async def jobs_stub(
    reconciling_service: RunningService,
) -> AsyncIterator[pb_grpc.PaymentsServiceStub]:
    async with signed_aio_channel(
        reconciling_service.target, caller="jobs", service="payments"
    ) as channel:
        yield pb_grpc.PaymentsServiceStub(channel)


async def test_a_slow_provider_is_reconciled_within_the_auditors_deadline(
    jobs_stub: pb_grpc.PaymentsServiceStub,
    reconciling_service: RunningService,
    admin: SandboxAdmin,
    sandbox_url: str,
    unique: Callable[[str], str],
) -> None:
    for _ in range(CAPTURED):
        gtx = unique("gtx")
        await jobs_stub.Authorize(authorize_request(gtx))
        await jobs_stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
    # Captured at Stripe's dashboard behind our back: ours still says AUTHORIZED.
    gtx = unique("gtx")
    planted = (await jobs_stub.Authorize(authorize_request(gtx, amount=4200))).payment
    assert planted.state == pb.Payment.AUTHORIZED
    await stripe_client(sandbox_url, API_KEY).v1.payment_intents.capture_async(
        planted.provider_payment_id
    )

    admin.add_fault("latency", ms=LATENCY_MS)  # every provider call from now on
    began = time.monotonic()
    reply = await jobs_stub.ReconcileProvider(
        pb.ReconcileProviderRequest(limit=100), timeout=AUDITOR_DEADLINE
    )
    took = time.monotonic() - began
    print(f"ReconcileProvider of {CAPTURED + 1} payments at {LATENCY_MS} ms: {took:.2f} s")

    assert reply.checked == CAPTURED + 1
    assert [(m.payment_id, m.detail, m.kind) for m in reply.mismatches] == [
        (
            planted.payment_id,
            "provider captured 4200, local state AUTHORIZED",
            pb.ProviderMismatch.KIND_CHARGE,
        )
    ]
