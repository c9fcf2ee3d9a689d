"""Methods that settle later and payment faults, end to end through the real participants: 3-D
Secure and bank transfer activated by settlement events, provider timeout and outage, activation
failure with automatic refund, cancellation refunded per policy."""

from __future__ import annotations

import grpc
import pytest

from hirepay.jobs.v1 import jobs_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2 as ppb
from tests.support.jobs_stack import (
    FEE,
    FIELDS,
    REFUSE_ACTIVATION_MARKER,
    company,
    payment_of_saga,
    post_request,
    reason_of,
)
from tests.support.waiting import eventually


def job_of(jobs, actor, job_id: str) -> pb.Job:
    return jobs.GetJob(pb.GetJobRequest(actor=actor, job_id=job_id), timeout=5).job


def provider_id(stack, payment_id: str) -> str:
    payment = stack.payments_stub.GetPayment(
        ppb.GetPaymentRequest(payment_id=payment_id), timeout=5
    ).payment
    return payment.provider_payment_id


def test_three_d_secure_waits_then_the_settlement_event_activates(stack, jobs):
    actor = company()
    reply = jobs.CreateJobWithPayment(
        post_request(actor, token="pm_card_threeDSecure2Required"), timeout=30
    )
    assert reply.job.status == pb.Job.PENDING_PAYMENT
    assert reply.job.payment_status == pb.Job.PENDING
    assert reply.next_action_url
    assert reply.payment_state == "REQUIRES_ACTION"
    public = jobs.ListActiveJobs(pb.ListActiveJobsRequest(), timeout=5).jobs
    assert reply.job.job_id not in {j.job_id for j in public}
    stack.admin.authenticate_payment_intent(provider_id(stack, reply.payment_id))
    eventually(lambda: job_of(jobs, actor, reply.job.job_id).payment_status == pb.Job.COMPLETED)
    job = job_of(jobs, actor, reply.job.job_id)
    assert job.status == pb.Job.ACTIVE
    payment = payment_of_saga(stack, reply.saga_id)
    assert payment.state == ppb.Payment.CAPTURED and payment.captured_minor == FEE


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_bank_transfer_is_settled_by_the_provider(stack, jobs, outcome):
    actor = company()
    reply = jobs.CreateJobWithPayment(
        post_request(actor, method="bank_transfer", token=""), timeout=30
    )
    assert reply.job.status == pb.Job.PENDING_PAYMENT
    assert reply.payment_state == "PROCESSING"
    stack.admin.settle_payment_intent(provider_id(stack, reply.payment_id), outcome)
    eventually(lambda: job_of(jobs, actor, reply.job.job_id).status != pb.Job.PENDING_PAYMENT)
    job = job_of(jobs, actor, reply.job.job_id)
    payment = payment_of_saga(stack, reply.saga_id)
    if outcome == "succeeded":
        eventually(lambda: job_of(jobs, actor, reply.job.job_id).payment_status == pb.Job.COMPLETED)
        assert job.status == pb.Job.ACTIVE
        assert payment.captured_minor == FEE
    else:
        assert job.status == pb.Job.PAYMENT_FAILED
        assert job.fields == FIELDS
        assert payment.captured_minor == 0


def test_provider_timeout_is_unknown_posts_nothing_charges_nothing(stack, jobs):
    stack.admin.add_fault("timeout", seconds=4, path_prefix="/v1/payment_intents", method="POST")
    actor = company()
    with pytest.raises(grpc.RpcError) as info:
        jobs.CreateJobWithPayment(post_request(actor), timeout=30)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    reason, metadata = reason_of(info.value)
    assert reason == "PAYMENT_TIMEOUT"
    assert metadata["retry"] == "true" and metadata["transaction_id"]
    saga_id = metadata["transaction_id"]
    stack.admin.clear_faults()
    (job,) = jobs.ListMyJobs(pb.ListMyJobsRequest(actor=actor), timeout=5).jobs
    assert job.status == pb.Job.PAYMENT_FAILED
    # The unknown payment is resolved by payments and released: nothing held, nothing taken.
    eventually(
        lambda: payment_of_saga(stack, saga_id).state in (ppb.Payment.VOIDED, ppb.Payment.FAILED),
        timeout=40,
    )
    assert payment_of_saga(stack, saga_id).captured_minor == 0


def test_provider_down_posts_nothing(stack, jobs):
    stack.admin.add_fault("down", path_prefix="/v1/payment_intents", method="POST")
    actor = company()
    with pytest.raises(grpc.RpcError) as info:
        jobs.CreateJobWithPayment(post_request(actor), timeout=30)
    reason, _ = reason_of(info.value)
    assert reason in ("PAYMENT_PROVIDER_UNAVAILABLE", "PAYMENT_TIMEOUT")
    (job,) = jobs.ListMyJobs(pb.ListMyJobsRequest(actor=actor), timeout=5).jobs
    assert job.status == pb.Job.PAYMENT_FAILED


def test_activation_failure_voids_and_never_charges(stack, jobs):
    """The activation checks run before the capture (PAY-4): the authorization is voided."""
    actor = company()
    fields = pb.JobFields()
    fields.CopyFrom(FIELDS)
    fields.title = f"Payments Engineer {REFUSE_ACTIVATION_MARKER}"
    with pytest.raises(grpc.RpcError) as info:
        jobs.CreateJobWithPayment(post_request(actor, job=fields), timeout=30)
    reason, metadata = reason_of(info.value)
    assert reason == "ACTIVATION_FAILED" and metadata["refunded"] == "false"
    (job,) = jobs.ListMyJobs(pb.ListMyJobsRequest(actor=actor), timeout=5).jobs
    assert job.status == pb.Job.PAYMENT_FAILED
    assert job.payment_status == pb.Job.FAILED
    payment = payment_of_saga(stack, metadata["transaction_id"])
    assert payment.state == ppb.Payment.VOIDED and payment.captured_minor == 0


def test_cancel_within_the_window_refunds_the_fee(stack, jobs):
    actor = company()
    reply = jobs.CreateJobWithPayment(post_request(actor), timeout=30)
    cancelled = jobs.CancelJob(
        pb.CancelJobRequest(actor=actor, job_id=reply.job.job_id, reason="filled elsewhere"),
        timeout=10,
    ).job
    assert cancelled.status == pb.Job.CANCELLED
    eventually(lambda: job_of(jobs, actor, reply.job.job_id).payment_status == pb.Job.REFUNDED)
    eventually(lambda: payment_of_saga(stack, reply.saga_id).refunded_minor == FEE)
    public = jobs.ListActiveJobs(pb.ListActiveJobsRequest(), timeout=5).jobs
    assert reply.job.job_id not in {j.job_id for j in public}
    with pytest.raises(grpc.RpcError) as info:
        jobs.CancelJob(pb.CancelJobRequest(actor=company(), job_id=reply.job.job_id), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_hosted_checkout_paid_activates(stack, jobs):
    actor = company()
    request = post_request(actor, method="checkout", token="")
    request.payment.return_url = "https://hirepay.test/return"
    request.payment.cancel_url = "https://hirepay.test/cancel"
    reply = jobs.CreateJobWithPayment(request, timeout=30)
    assert reply.job.status == pb.Job.PENDING_PAYMENT and reply.next_action_url
    response = stack.admin.pay_checkout(reply.next_action_url)
    assert response.status_code in (200, 302, 303), response.text
    eventually(lambda: job_of(jobs, actor, reply.job.job_id).payment_status == pb.Job.COMPLETED)
    assert job_of(jobs, actor, reply.job.job_id).status == pb.Job.ACTIVE
    assert payment_of_saga(stack, reply.saga_id).captured_minor == FEE


def test_hosted_checkout_cancelled_by_the_user_posts_nothing(stack, jobs):
    actor = company()
    request = post_request(actor, method="checkout", token="")
    request.payment.return_url = "https://hirepay.test/return"
    request.payment.cancel_url = "https://hirepay.test/cancel"
    reply = jobs.CreateJobWithPayment(request, timeout=30)
    # The user presses cancel on the checkout page; the gateway tells payments.
    stack.payments_stub.CancelCheckout(
        ppb.CancelCheckoutRequest(request_id=reply.saga_id, payment_id=reply.payment_id),
        timeout=10,
    )
    eventually(lambda: job_of(jobs, actor, reply.job.job_id).status == pb.Job.PAYMENT_FAILED)
    job = job_of(jobs, actor, reply.job.job_id)
    assert job.payment_status == pb.Job.FAILED
    assert payment_of_saga(stack, reply.saga_id).captured_minor == 0
