"""ReconcileProvider rounds under a deadline too short for their window, against a provider as
slow as real Stripe (OPS-3, round 11): every payment of the window is reached before any is
checked twice, each answer says how many it left, and a mismatch found stays in the answers.

Round 10 checked the window most recently changed first, so with the same short deadline every
round checked the same newest payments: a mismatch on the oldest payment of the window was never
found. Now a round begins with the payments never checked, then the longest unchecked (payments'
`payment_reconciliations`, migration 0017), so the rounds go through the whole window."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay_dev.sandbox_client import SandboxAdmin, stripe_client
from hirepay_dev.services import RunningService
from tests.support.payments_helpers import authorize_request, branch
from tests.support.stripe_stack import payments_stub_as_jobs, start_reconciling_payments

API_KEY = "sk_test_reconcilerounds"
NEWER = 23  # captured after the planted one
LATENCY_MS = 300  # real Stripe's typical answer time
# A check (a retrieve and a refunds list) takes 0.6 s unloaded: in 3 s less the 0.5 s margin,
# each of the 2 workers checks 4 captured payments a round, so 24 payments take 3 rounds. A
# loaded machine makes each check slower, so a round checks fewer (the test waits for as many
# rounds as the window's checks take); a round checks none only if one check takes 2.5 s.
CONCURRENCY = 2
DEADLINE = 3.0


@pytest.fixture(scope="module")
def reconciling_service(
    make_service_database: Callable[[str], str], sandbox_url: str
) -> Iterator[RunningService]:
    """A payments process of its own: its most recently changed payments are this module's."""
    service = start_reconciling_payments(
        make_service_database("payments"),
        sandbox_url,
        api_key=API_KEY,
        log_name="payments-reconcile-rounds",
        PAYMENTS_LOG_LEVEL="INFO",
        PAYMENTS_RECONCILE_CONCURRENCY=str(CONCURRENCY),
    )
    yield service
    service.stop()


@pytest.fixture(scope="module")
async def oldest(reconciling_service: RunningService, sandbox_url: str) -> pb.Payment:
    """The oldest payment of the window, captured at Stripe's dashboard behind our back (ours
    still says AUTHORIZED); then 23 payments captured the ordinary way."""
    async with payments_stub_as_jobs(reconciling_service) as stub:
        gtx = f"gtx-{uuid.uuid4().hex[:12]}"
        payment = (await stub.Authorize(authorize_request(gtx, amount=4200))).payment
        await stripe_client(sandbox_url, API_KEY).v1.payment_intents.capture_async(
            payment.provider_payment_id
        )
        for _ in range(NEWER):
            gtx = f"gtx-{uuid.uuid4().hex[:12]}"
            await stub.Authorize(authorize_request(gtx))
            await stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
    assert payment.state == pb.Payment.AUTHORIZED
    return payment


async def test_rounds_cut_short_by_the_deadline_reach_the_oldest_payment_of_the_window(
    jobs_stub: pb_grpc.PaymentsServiceStub, oldest: pb.Payment, admin: SandboxAdmin
) -> None:
    admin.add_fault("latency", ms=LATENCY_MS)
    window = NEWER + 1
    answers: list[pb.ReconcileProviderResponse] = []
    # Rounds until the mismatch is found, or the window's worth of checks is made without it
    # (round 10's order: the newest payments again, never the oldest): counted in checks, not
    # rounds, so a slower round (fewer checks) does not fail it.
    while not any(a.mismatches for a in answers) and sum(a.checked for a in answers) < window:
        reply = await jobs_stub.ReconcileProvider(
            pb.ReconcileProviderRequest(limit=100), timeout=DEADLINE
        )
        # A partial answer says what it left: the next round begins with those.
        assert 0 < reply.checked < window and reply.left == window - reply.checked, reply
        answers.append(reply)
    print(f"rounds of {DEADLINE} s: checked {[a.checked for a in answers]}")
    assert [(m.payment_id, m.detail) for a in answers for m in a.mismatches] == [
        (oldest.payment_id, "provider captured 4200, local state AUTHORIZED")
    ], (
        f"the oldest payment was not reached in {len(answers)} rounds: {[a.checked for a in answers]}"
    )
    assert sum(a.checked for a in answers[:-1]) < window  # no payment twice before it
    # The next round is unlikely to check it again, and answers it still: as its last check
    # found it (the auditor reports both lists).
    after = await jobs_stub.ReconcileProvider(
        pb.ReconcileProviderRequest(limit=100), timeout=DEADLINE
    )
    assert [m.payment_id for m in [*after.mismatches, *after.earlier_mismatches]] == [
        oldest.payment_id
    ]
