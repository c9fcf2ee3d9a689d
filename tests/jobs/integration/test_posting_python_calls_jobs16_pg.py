"""What one card posting costs the jobs process in Python calls (issue 13, round 16), counted from
the servicer's CreateJobWithPayment down on real PostgreSQL, with the real payments participant
(its stub answering at once): the jobs service's own code by folder, and the functions no longer
called per posting (a saga state's `final` property, provider_rank, the stored rows' per-row
version method, the answer's per-timestamp helper, the minter's signed tokens on a call in the
posting's new trace). The posting is still the same: active, captured, answered."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
from opentelemetry import context as otel_context

from hirepay.jobs.v1 import jobs_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2 as ppb
from hirepay_dev.procs import ensure_service_token_secret
from hirepay_platform import identity, tracing
from jobs.adapters.participants import CreditsParticipant, GrpcParticipants, PaymentsParticipant
from jobs.adapters.unit_of_work import SqlJobsUnitOfWork
from jobs.entrypoints.servicer import JobsServicer
from jobs.service_layer.deps import Deps
from tests.support.jobs_fakes import make_config
from tests.support.jobs_stack import FIELDS
from tests.support.python_calls import entered

# The folders of the jobs service's own code a posting runs in.
_JOBS_FOLDERS = frozenset(
    {"entrypoints", "handlers", "posting", "service_layer", "domain", "adapters"}
)


@pytest.fixture
def connections() -> tuple[int, int]:
    # One connection: the measured postings run on the connection the warm-up prepared.
    return 1, 0


class _PaymentsStub:
    """Payments answering at once: the card authorized, then captured."""

    def __init__(self) -> None:
        self.metadata: list[Any] = []

    async def Authorize(self, request: Any, *, timeout: float, metadata: Any) -> Any:
        self.metadata.append(metadata)
        return self._answer(request, ppb.Payment.AUTHORIZED)

    async def Capture(self, request: Any, *, timeout: float, metadata: Any) -> Any:
        self.metadata.append(metadata)
        return self._answer(request, ppb.Payment.CAPTURED)

    def _answer(self, request: Any, state: int) -> Any:
        payment_id = f"pay_{request.branch.global_tx_id}"
        return ppb.PaymentResponse(payment=ppb.Payment(payment_id=payment_id, state=state))


def _request() -> pb.CreateJobWithPaymentRequest:
    return pb.CreateJobWithPaymentRequest(
        request_id=uuid.uuid4().hex,
        job=FIELDS,
        payment=pb.PaymentChoice(method="card", payment_method="pm_card_visa"),
        accept_terms=True,
        rate_limit=pb.PostingRateLimit(limit=1000, window_seconds=60),
    )


async def test_a_card_posting_costs_the_jobs_code_fewer_python_calls(sessions) -> None:
    identity.configure("jobs", ensure_service_token_secret())
    payments = PaymentsParticipant("127.0.0.1:1", 5.0)
    stub = _PaymentsStub()
    payments._stub = stub  # (made once per client: the participant's stub)
    participants = GrpcParticipants(payments, CreditsParticipant("127.0.0.1:1", 5.0, 600))
    config = make_config()
    servicer = JobsServicer(
        lambda: Deps.build(lambda: SqlJobsUnitOfWork(sessions), config, participants)
    )
    caller = identity.Caller("gateway", identity.Actor("co_calls", "company"))
    seen: Counter[tuple[str, str]] = Counter()
    postings = 5
    try:
        for n in range(3 + postings):  # (3 to warm: statements prepared, caches filled)
            # Each posting in a trace of its own, as it reaches jobs from the gateway.
            traceparent = f"00-{uuid.uuid4().hex}-b7ad6b7169203331-01"
            attached = otel_context.attach(tracing.incoming_context([("traceparent", traceparent)]))
            bound = identity.set_current_caller(caller)
            try:
                if n < 3:
                    reply = await servicer.CreateJobWithPayment(_request(), None)
                else:
                    with entered() as counted:
                        reply = await servicer.CreateJobWithPayment(_request(), None)
                    seen.update(counted)
            finally:
                identity.reset_current_caller(bound)
                otel_context.detach(attached)
            assert reply.job.status == pb.Job.ACTIVE and reply.payment_state == "CAPTURED"
            assert dict(stub.metadata[-1])["traceparent"] == traceparent
    finally:
        await payments.close()

    jobs_code = sum(v for (folder, _), v in seen.items() if folder in _JOBS_FOLDERS)
    names = {name for (folder, name) in seen if folder in _JOBS_FOLDERS}
    platform = {name for (folder, name) in seen if folder == "hirepay_platform"}
    # 193 per posting, was 214: `state in FINAL_STATES` for the `final` property (5 per
    # posting), the provider ranks looked up in provider_state_advances (6), the stored rows'
    # versions worked out in `stored` (6), the answer's timestamps formatted in place (4).
    # Round 17 (jobsgw17): 188, the free-text fields' lengths checked in one loop (5).
    assert jobs_code / postings <= 190, sorted(names)
    assert not names & {"final", "provider_rank", "_version_now", "_ts", "_length_problem"}, sorted(
        names
    )
    # The posting's first call to payments, in its new trace, signs nothing anew.
    assert not platform & {"signed", "_service_token", "entry"}, sorted(platform)
