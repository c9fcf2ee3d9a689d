"""The jobs service as a real process with the real payments and wallet processes and the Stripe
sandbox: card success, decline, credits, idempotent twins, and kill -9 crash recovery."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from hirepay.jobs.v1 import jobs_service_pb2 as pb
from hirepay.jobs.v1 import jobs_service_pb2_grpc as pb_grpc
from hirepay.payments.v1 import payments_service_pb2 as ppb
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from tests.support import jobs_process
from tests.support.jobs_stack import (
    CREDITS_FEE,
    FEE,
    FIELDS,
    balance,
    company,
    credits_account,
    grant_credits,
    payment_of_saga,
    post_request,
    reason_of,
    start_jobs,
)
from tests.support.service_auth import signed_channel
from tests.support.waiting import eventually


def test_card_success_is_active_and_captured_once(stack, jobs):
    actor = company()
    request = post_request(actor)
    reply = jobs.CreateJobWithPayment(request, timeout=30)
    job = reply.job
    assert job.status == pb.Job.ACTIVE
    assert job.payment_status == pb.Job.COMPLETED
    assert (job.payment_amount.amount_minor, job.payment_amount.currency) == (FEE, "USD")
    assert job.posted_at.seconds > 0 and job.payment_id == reply.payment_id
    payment = stack.payments_stub.GetPayment(
        ppb.GetPaymentRequest(payment_id=reply.payment_id), timeout=5
    ).payment
    assert payment.state == ppb.Payment.CAPTURED
    assert payment.captured_minor == FEE
    # A lost response: the same key answers the same job again, without a second charge.
    again = jobs.CreateJobWithPayment(request, timeout=30)
    assert again.replayed and again.job.job_id == job.job_id and again.saga_id == reply.saga_id
    public = jobs.ListActiveJobs(pb.ListActiveJobsRequest(), timeout=5)
    assert job.job_id in {j.job_id for j in public.jobs}
    anyone = jobs.GetJob(pb.GetJobRequest(job_id=job.job_id), timeout=5)
    assert anyone.job.status == pb.Job.ACTIVE


def test_decline_posts_nothing_and_keeps_the_draft(stack, jobs):
    actor = company()
    draft = jobs.CreateDraft(pb.CreateDraftRequest(actor=actor, fields=FIELDS), timeout=5).job
    request = pb.CreateJobWithPaymentRequest(
        request_id=uuid.uuid4().hex,
        actor=actor,
        draft_id=draft.job_id,
        payment=pb.PaymentChoice(method="card", payment_method="pm_card_chargeDeclined"),
        accept_terms=True,
    )
    with pytest.raises(grpc.RpcError) as info:
        jobs.CreateJobWithPayment(request, timeout=30)
    reason, metadata = reason_of(info.value)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason == "PAYMENT_DECLINED"
    assert metadata.get("code") == "card_declined"
    saga_id = metadata["transaction_id"]
    job = jobs.GetJob(pb.GetJobRequest(actor=actor, job_id=draft.job_id), timeout=5).job
    assert job.status == pb.Job.PAYMENT_FAILED
    assert job.payment_status == pb.Job.FAILED
    assert job.fields == draft.fields
    payment = payment_of_saga(stack, saga_id)
    assert payment.state in (ppb.Payment.FAILED, ppb.Payment.VOIDED)
    assert payment.captured_minor == 0
    # Nobody else sees it; retrying with a good card and a new key posts the same draft.
    with pytest.raises(grpc.RpcError) as hidden:
        jobs.GetJob(pb.GetJobRequest(actor=company(), job_id=draft.job_id), timeout=5)
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    retry = pb.CreateJobWithPaymentRequest()
    retry.CopyFrom(request)
    retry.request_id = uuid.uuid4().hex
    retry.payment.payment_method = "pm_card_visa"
    reply = jobs.CreateJobWithPayment(retry, timeout=30)
    assert reply.job.job_id == draft.job_id and reply.job.status == pb.Job.ACTIVE
    transitions = jobs.ListJobTransitions(
        pb.ListJobTransitionsRequest(actor=actor, job_id=draft.job_id), timeout=5
    ).transitions
    assert [t.to_status for t in transitions] == [
        pb.Job.DRAFT,
        pb.Job.PENDING_PAYMENT,
        pb.Job.PAYMENT_FAILED,
        pb.Job.PENDING_PAYMENT,
        pb.Job.ACTIVE,
    ]


def test_validation_errors_are_field_level(jobs):
    bad = pb.JobFields(title="x", description="short", category="astrology")
    with pytest.raises(grpc.RpcError) as info:
        jobs.CreateDraft(pb.CreateDraftRequest(actor=company(), fields=bad), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reason, fields = reason_of(info.value)
    assert reason == "VALIDATION_FAILED"
    assert {"title", "description", "location", "employment_type", "category"} <= set(fields)


def test_credits_success_moves_exactly_500_credits(stack, jobs):
    actor = company()
    account = grant_credits(stack, actor.user_id, 1200)
    revenue = credits_account(stack, "platform", wpb.ACCOUNT_KIND_PLATFORM_REVENUE)
    revenue_before = balance(stack, revenue.account_id).posted_minor
    reply = jobs.CreateJobWithPayment(post_request(actor, method="credits", token=""), timeout=30)
    assert reply.job.status == pb.Job.ACTIVE
    assert reply.job.payment_status == pb.Job.COMPLETED
    assert (reply.job.payment_amount.amount_minor, reply.job.payment_amount.currency) == (
        CREDITS_FEE,
        "JOB_CREDIT",
    )
    after = balance(stack, account)
    assert (after.posted_minor, after.pending_minor, after.available_minor) == (700, 0, 700)
    assert balance(stack, revenue.account_id).posted_minor == revenue_before + CREDITS_FEE


def test_insufficient_credits_takes_nothing(stack, jobs):
    actor = company()
    account = grant_credits(stack, actor.user_id, 300)
    with pytest.raises(grpc.RpcError) as info:
        jobs.CreateJobWithPayment(post_request(actor, method="credits", token=""), timeout=30)
    reason, metadata = reason_of(info.value)
    assert reason == "INSUFFICIENT_CREDITS"
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert metadata["transaction_id"].startswith("saga_")
    after = balance(stack, account)
    assert (after.posted_minor, after.pending_minor, after.available_minor) == (300, 0, 300)
    mine = jobs.ListMyJobs(pb.ListMyJobsRequest(actor=actor), timeout=5).jobs
    assert [j.status for j in mine] == [pb.Job.PAYMENT_FAILED]


def test_concurrent_twins_give_one_charge_one_job(stack, jobs):
    actor = company()
    request = post_request(actor, key="twin-key")
    with ThreadPoolExecutor(max_workers=20) as pool:
        replies = list(
            pool.map(lambda _: jobs.CreateJobWithPayment(request, timeout=30), range(20))
        )
    assert len({r.job.job_id for r in replies}) == 1
    assert len({r.saga_id for r in replies}) == 1
    assert sum(not r.replayed for r in replies) == 1
    first = next(r for r in replies if not r.replayed)
    for r in replies:
        r.replayed = False
        assert r == first
    mine = jobs.ListMyJobs(pb.ListMyJobsRequest(actor=actor), timeout=5).jobs
    assert len(mine) == 1 and mine[0].status == pb.Job.ACTIVE
    # One charge: the saga's one payment is captured once, for the fee (Confirm may be retried).
    eventually(lambda: payment_of_saga(stack, first.saga_id).state == ppb.Payment.CAPTURED)
    assert payment_of_saga(stack, first.saga_id).captured_minor == FEE
    other = post_request(
        actor,
        key="twin-key",
        job=pb.JobFields(
            **{
                **{f.name: getattr(FIELDS, f.name) for f in FIELDS.DESCRIPTOR.fields},
                "title": "Other title",
            }
        ),
    )
    with pytest.raises(grpc.RpcError) as info:
        jobs.CreateJobWithPayment(other, timeout=30)
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(info.value)[0] == "IDEMPOTENCY_MISMATCH"


@pytest.mark.slow
@pytest.mark.parametrize("step", ["pending", "try", "activate", "confirm"])
def test_kill_9_at_a_saga_step_then_recovery_is_consistent(stack, make_service_database, step):
    database = make_service_database("jobs")
    service = start_jobs(stack, database, crash_after=step)
    try:
        _crash_then_recover(stack, service, step)
    finally:
        service.stop()


def _crash_then_recover(stack, service, step: str) -> None:
    actor = company()
    request = post_request(actor)
    with signed_channel(service.target, caller="gateway", service="jobs") as channel:
        stub = pb_grpc.JobsServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.CreateJobWithPayment(request, timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert service.process.popen is not None
    assert service.process.popen.wait(10) == 137
    # Restart the same service (same ports and database) without the crash switch.
    service.process.env = {**service.process.env, jobs_process.CRASH_AFTER_STEP: ""}
    service.process.popen = None
    service.process.start(30)
    with signed_channel(service.target, caller="gateway", service="jobs") as channel:
        stub = pb_grpc.JobsServiceStub(channel)

        def settled() -> bool:
            jobs_now = stub.ListMyJobs(pb.ListMyJobsRequest(actor=actor), timeout=5).jobs
            return len(jobs_now) == 1 and jobs_now[0].payment_status in (
                pb.Job.COMPLETED,
                pb.Job.FAILED,
                pb.Job.REFUNDED,
            )

        eventually(settled)
        (job,) = stub.ListMyJobs(pb.ListMyJobsRequest(actor=actor), timeout=5).jobs
        # The client retrying with its key gets the recovered answer.
        reply = stub.CreateJobWithPayment(request, timeout=30)
        assert reply.replayed and reply.job.job_id == job.job_id
        payment = payment_of_saga(stack, reply.saga_id)
        # Consistent: active exactly when the money was captured, else nothing held or taken.
        if job.status == pb.Job.ACTIVE:
            assert job.payment_status == pb.Job.COMPLETED
            assert payment.state == ppb.Payment.CAPTURED and payment.captured_minor == FEE
        else:
            assert job.status == pb.Job.PAYMENT_FAILED
            assert payment.captured_minor == payment.refunded_minor
            assert payment.state != ppb.Payment.AUTHORIZED
        # Within the saga's deadline, recovery finishes the posting (re-sending a lost Try).
        assert job.status == pb.Job.ACTIVE
