"""ReconcileProvider's sweep through a real payments process and the Stripe sandbox (OPS-3, round
11): a refund made at Stripe's dashboard of a payment long out of the auditor's window is found
within ceil(payments / PAYMENTS_RECONCILE_SWEEP_PER_ROUND) rounds and stays reported, and a
payment whose provider cannot be read past PAYMENTS_RECONCILE_UNREADABLE_GRACE_SECONDS is named
(`unreadable_payments`) until it can be read again.

Before, a round compared only its window (the `limit` most recently changed payments): the refund
of an older payment was never compared, and unreadable payments were only counted."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator

import pytest

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay_dev.sandbox_client import SandboxAdmin, stripe_client
from hirepay_dev.services import RunningService
from tests.support.payments_helpers import authorize_request, branch
from tests.support.stripe_stack import payments_stub_as_jobs, start_reconciling_payments

API_KEY = "sk_test_reconcilesweep"
PAYMENTS = 12
PER_ROUND = 4
WINDOW = 2  # the auditor's `limit`, small: the refunded payment is long out of it


@pytest.fixture(scope="module")
def reconciling_service(
    make_service_database: Callable[[str], str], sandbox_url: str
) -> Iterator[RunningService]:
    service = start_reconciling_payments(
        make_service_database("payments"),
        sandbox_url,
        api_key=API_KEY,
        log_name="payments-reconcile-sweep",
        PAYMENTS_RECONCILE_SWEEP_PER_ROUND=str(PER_ROUND),
        PAYMENTS_RECONCILE_UNREADABLE_GRACE_SECONDS="0",
    )
    yield service
    service.stop()


@pytest.fixture(scope="module")
async def captured(reconciling_service: RunningService) -> list[pb.Payment]:
    """12 payments captured the ordinary way, oldest first."""
    async with payments_stub_as_jobs(reconciling_service) as stub:
        payments = []
        for _ in range(PAYMENTS):
            gtx = f"gtx-{uuid.uuid4().hex[:12]}"
            await stub.Authorize(authorize_request(gtx, amount=3000))
            reply = await stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
            payments.append(reply.payment)
    return payments


async def _round(stub: pb_grpc.PaymentsServiceStub) -> pb.ReconcileProviderResponse:
    return await stub.ReconcileProvider(pb.ReconcileProviderRequest(limit=WINDOW), timeout=10)


async def test_a_dashboard_refund_of_a_payment_out_of_the_window_is_found_by_the_sweep(
    jobs_stub: pb_grpc.PaymentsServiceStub, captured: list[pb.Payment], sandbox_url: str
) -> None:
    refunded = captured[1]
    await stripe_client(sandbox_url, API_KEY).v1.refunds.create_async(
        params={"payment_intent": refunded.provider_payment_id, "amount": 500}
    )
    answers = [await _round(jobs_stub) for _ in range(math.ceil(PAYMENTS / PER_ROUND))]
    found = {(m.payment_id, m.kind) for a in answers for m in a.mismatches}
    assert found == {(refunded.payment_id, pb.ProviderMismatch.KIND_REFUND)}, answers
    # Every round read at most its share of the sweep and its window.
    assert all(a.checked <= PER_ROUND + WINDOW + 1 for a in answers), answers
    # Open: checked again every round, so it stays reported while the sweep is elsewhere.
    later = await _round(jobs_stub)
    assert [m.payment_id for m in later.mismatches] == [refunded.payment_id]


async def test_a_payment_whose_provider_cannot_be_read_is_named_until_it_can(
    jobs_stub: pb_grpc.PaymentsServiceStub, captured: list[pb.Payment], admin: SandboxAdmin
) -> None:
    newest = captured[-1]  # in the window: checked every round
    admin.add_fault("down", path_prefix=f"/v1/payment_intents/{newest.provider_payment_id}")
    try:
        blind = await _round(jobs_stub)
    finally:
        admin.clear_faults()
    assert blind.unreadable >= 1
    assert [(m.payment_id, m.kind) for m in blind.unreadable_payments] == [
        (newest.payment_id, pb.ProviderMismatch.KIND_UNREADABLE)
    ]
    assert blind.unreadable_payments[0].detail.startswith("provider stripe unreadable since ")
    readable = await _round(jobs_stub)
    assert list(readable.unreadable_payments) == [] and readable.unreadable == 0
