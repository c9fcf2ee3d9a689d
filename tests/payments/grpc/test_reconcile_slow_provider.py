"""ReconcileProvider against a provider as slow as real Stripe (OPS-3): ~300 ms on every call.

The consistency auditor asks for the 100 most recently changed payments with its 10 s RPC
deadline. Checked one after another (a retrieve and a refunds list per captured payment), 41
payments take ~25 s and the round fails with DEADLINE_EXCEEDED; checked a bounded number at a
time they fit, and a planted mismatch is still found."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay_dev.sandbox_client import SandboxAdmin, stripe_client
from hirepay_dev.services import RunningService
from tests.support.payments_helpers import authorize_request, branch
from tests.support.stripe_stack import payments_stub_as_jobs, start_reconciling_payments

API_KEY = "sk_test_reconcileslow"
CAPTURED = 40
LATENCY_MS = 300  # real Stripe's typical answer time
AUDITOR_DEADLINE = 10.0  # jobs' rpc_timeout_seconds, the auditor's deadline for the call


@pytest.fixture(scope="module")
def reconciling_service(
    make_service_database: Callable[[str], str], sandbox_url: str
) -> Iterator[RunningService]:
    """A payments process of its own: its most recently changed payments are this module's."""
    service = start_reconciling_payments(
        make_service_database("payments"),
        sandbox_url,
        api_key=API_KEY,
        log_name="payments-reconcile-slow",
        PAYMENTS_LOG_LEVEL="INFO",
    )
    yield service
    service.stop()


@pytest.fixture(scope="module")
async def planted(reconciling_service: RunningService, sandbox_url: str) -> pb.Payment:
    """40 captured payments, then one captured at Stripe's dashboard behind our back (ours
    still says AUTHORIZED): the mismatch a round must find."""
    async with payments_stub_as_jobs(reconciling_service) as stub:
        for _ in range(CAPTURED):
            gtx = f"gtx-{uuid.uuid4().hex[:12]}"
            await stub.Authorize(authorize_request(gtx))
            await stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
        gtx = f"gtx-{uuid.uuid4().hex[:12]}"
        payment = (await stub.Authorize(authorize_request(gtx, amount=4200))).payment
    assert payment.state == pb.Payment.AUTHORIZED
    await stripe_client(sandbox_url, API_KEY).v1.payment_intents.capture_async(
        payment.provider_payment_id
    )
    return payment


PLANTED_DETAIL = "provider captured 4200, local state AUTHORIZED"


async def test_a_slow_provider_is_reconciled_within_the_auditors_deadline(
    jobs_stub: pb_grpc.PaymentsServiceStub, planted: pb.Payment, admin: SandboxAdmin
) -> None:
    admin.add_fault("latency", ms=LATENCY_MS)  # every provider call from now on
    began = time.monotonic()
    reply = await jobs_stub.ReconcileProvider(
        pb.ReconcileProviderRequest(limit=100), timeout=AUDITOR_DEADLINE
    )
    took = time.monotonic() - began
    print(f"ReconcileProvider of {CAPTURED + 1} payments at {LATENCY_MS} ms: {took:.2f} s")

    assert reply.checked == CAPTURED + 1
    assert [(m.payment_id, m.detail, m.kind) for m in reply.mismatches] == [
        (planted.payment_id, PLANTED_DETAIL, pb.ProviderMismatch.KIND_CHARGE)
    ]


async def test_a_deadline_too_short_for_all_is_answered_with_those_checked(
    jobs_stub: pb_grpc.PaymentsServiceStub,
    planted: pb.Payment,
    admin: SandboxAdmin,
    reconciling_service: RunningService,
) -> None:
    admin.add_fault("latency", ms=LATENCY_MS)
    # 41 payments at 8 at a time take ~3.5 s: 2 s allow some of them, newest first.
    reply = await jobs_stub.ReconcileProvider(pb.ReconcileProviderRequest(limit=100), timeout=2.0)
    assert 0 < reply.checked < CAPTURED + 1
    assert [(m.payment_id, m.detail) for m in reply.mismatches] == [
        (planted.payment_id, PLANTED_DETAIL)
    ]
    log = reconciling_service.process.log_path.read_text(errors="replace")
    assert f"{CAPTURED + 1 - reply.checked} left for the next round" in log
