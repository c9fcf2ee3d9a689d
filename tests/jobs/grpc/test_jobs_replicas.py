"""Several jobs replicas on one database: a replica dies mid-saga and another one finishes it; the
settlement stream is consumed once; metrics are exposed."""

from __future__ import annotations

import contextlib

import grpc
import httpx
import pytest

from hirepay.jobs.v1 import jobs_service_pb2 as pb
from hirepay.jobs.v1 import jobs_service_pb2_grpc as pb_grpc
from hirepay.payments.v1 import payments_service_pb2 as ppb
from tests.support.jobs_stack import (
    FEE,
    company,
    payment_of_saga,
    post_request,
    start_jobs,
)
from tests.support.service_auth import signed_channel
from tests.support.startup import start_together
from tests.support.waiting import eventually


@pytest.fixture
def replicas(stack, make_service_database):
    database = make_service_database("jobs")
    # The replicas do not depend on each other: started side by side (a failed start stops the
    # other), stopped in reverse order.
    with contextlib.ExitStack() as cleanup:
        doomed, survivor = start_together(
            cleanup,
            (
                lambda: start_jobs(stack, database, crash_after="try", JOBS_INSTANCE_ID="doomed"),
                lambda started: started.stop(),
            ),
            (
                lambda: start_jobs(stack, database, JOBS_INSTANCE_ID="survivor"),
                lambda started: started.stop(),
            ),
        )
        yield doomed, survivor


def test_a_surviving_replica_finishes_the_saga_of_a_dead_one(stack, replicas):
    doomed, survivor = replicas
    actor = company()
    request = post_request(actor)
    with signed_channel(doomed.target, caller="gateway", service="jobs") as channel:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.JobsServiceStub(channel).CreateJobWithPayment(request, timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with signed_channel(survivor.target, caller="gateway", service="jobs") as channel:
        stub = pb_grpc.JobsServiceStub(channel)

        def paid() -> bool:
            mine = stub.ListMyJobs(pb.ListMyJobsRequest(actor=actor), timeout=5).jobs
            return len(mine) == 1 and mine[0].payment_status == pb.Job.COMPLETED

        eventually(paid)
        # The client retries against any replica and gets the finished answer, charged once.
        reply = stub.CreateJobWithPayment(request, timeout=30)
        assert reply.replayed and reply.job.status == pb.Job.ACTIVE
        payment = payment_of_saga(stack, reply.saga_id)
        assert payment.state == ppb.Payment.CAPTURED and payment.captured_minor == FEE
        # A settle-later payment is applied once: one replica at a time consumes the events.
        pending = stub.CreateJobWithPayment(
            post_request(actor, method="bank_transfer", token=""), timeout=30
        )
        intent = stack.payments_stub.GetPayment(
            ppb.GetPaymentRequest(payment_id=pending.payment_id), timeout=5
        ).payment.provider_payment_id
        stack.admin.settle_payment_intent(intent, "succeeded")

        def active() -> bool:
            job = stub.GetJob(pb.GetJobRequest(actor=actor, job_id=pending.job.job_id), timeout=5)
            return job.job.payment_status == pb.Job.COMPLETED

        eventually(active)
        trail = stub.ListJobTransitions(
            pb.ListJobTransitionsRequest(actor=actor, job_id=pending.job.job_id), timeout=5
        ).transitions
        assert [t.to_status for t in trail].count(pb.Job.ACTIVE) == 1
    metrics = httpx.get(f"http://127.0.0.1:{survivor.metrics_port}/metrics", timeout=5).text
    assert 'hirepay_jobs_funnel_total{step="activated"}' in metrics
    assert "hirepay_jobs_saga_outcomes_total" in metrics
    assert "hirepay_jobs_stuck_sagas" in metrics
