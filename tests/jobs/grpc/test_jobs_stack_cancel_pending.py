"""Cancelling a job whose payment is still pending, through the real participants (payments, the
Stripe sandbox, the wallet): the saga is voided, a transfer settling afterwards is refunded, the job
never goes live, and a cancel racing the settlement ends in one consistent outcome."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from hirepay.jobs.v1 import jobs_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2 as ppb
from tests.support.jobs_stack import FEE, company, payment_of_saga, post_request
from tests.support.waiting import eventually


def job_of(jobs, actor, job_id: str) -> pb.Job:
    return jobs.GetJob(pb.GetJobRequest(actor=actor, job_id=job_id), timeout=5).job


def trail(jobs, actor, job_id: str) -> list[int]:
    reply = jobs.ListJobTransitions(
        pb.ListJobTransitionsRequest(actor=actor, job_id=job_id), timeout=5
    )
    return [t.to_status for t in reply.transitions]


def public_ids(jobs) -> set[str]:
    return {j.job_id for j in jobs.ListActiveJobs(pb.ListActiveJobsRequest(), timeout=5).jobs}


def provider_id(stack, payment_id: str) -> str:
    payment = stack.payments_stub.GetPayment(
        ppb.GetPaymentRequest(payment_id=payment_id), timeout=5
    ).payment
    return payment.provider_payment_id


def pending_bank_transfer(jobs, actor) -> pb.CreateJobWithPaymentResponse:
    reply = jobs.CreateJobWithPayment(
        post_request(actor, method="bank_transfer", token=""), timeout=30
    )
    assert reply.job.status == pb.Job.PENDING_PAYMENT
    assert reply.payment_state == "PROCESSING"
    return reply


def cancel(jobs, actor, job_id: str) -> pb.Job:
    return jobs.CancelJob(
        pb.CancelJobRequest(actor=actor, job_id=job_id, reason="changed my mind"), timeout=10
    ).job


def test_bank_transfer_settling_after_the_cancellation_is_refunded(stack, jobs):
    actor = company()
    reply = pending_bank_transfer(jobs, actor)
    job = cancel(jobs, actor, reply.job.job_id)
    assert job.status == pb.Job.CANCELLED
    # The Void is recorded (a processing transfer cannot be stopped at the provider): nothing taken.
    eventually(lambda: job_of(jobs, actor, job.job_id).payment_status == pb.Job.FAILED)
    stack.admin.settle_payment_intent(provider_id(stack, reply.payment_id), "succeeded")
    # The money arrives anyway: it is returned, once, and the job ends refunded, never live.
    eventually(lambda: job_of(jobs, actor, job.job_id).payment_status == pb.Job.REFUNDED, 40)
    payment = payment_of_saga(stack, reply.saga_id)
    assert payment.state == ppb.Payment.REFUNDED
    assert payment.captured_minor == FEE and payment.refunded_minor == FEE
    final = job_of(jobs, actor, job.job_id)
    assert final.status == pb.Job.CANCELLED and not final.posted_at.seconds
    assert job.job_id not in public_ids(jobs)
    statuses = trail(jobs, actor, job.job_id)
    assert statuses[-2:] == [pb.Job.PENDING_PAYMENT, pb.Job.CANCELLED]
    assert pb.Job.ACTIVE not in statuses
    # A retried cancel changes nothing.
    assert cancel(jobs, actor, job.job_id).status == pb.Job.CANCELLED
    assert trail(jobs, actor, job.job_id) == statuses


def test_bank_transfer_bouncing_after_the_cancellation_takes_nothing(stack, jobs):
    actor = company()
    reply = pending_bank_transfer(jobs, actor)
    cancel(jobs, actor, reply.job.job_id)
    eventually(lambda: job_of(jobs, actor, reply.job.job_id).payment_status == pb.Job.FAILED)
    stack.admin.settle_payment_intent(provider_id(stack, reply.payment_id), "failed")
    eventually(
        lambda: (
            payment_of_saga(stack, reply.saga_id).state in (ppb.Payment.FAILED, ppb.Payment.VOIDED)
        )
    )
    job = job_of(jobs, actor, reply.job.job_id)
    assert job.status == pb.Job.CANCELLED and job.payment_status == pb.Job.FAILED
    assert payment_of_saga(stack, reply.saga_id).captured_minor == 0


def test_three_d_secure_not_completed_is_voided_on_cancellation(stack, jobs):
    actor = company()
    reply = jobs.CreateJobWithPayment(
        post_request(actor, token="pm_card_threeDSecure2Required"), timeout=30
    )
    assert reply.job.status == pb.Job.PENDING_PAYMENT and reply.next_action_url
    job = cancel(jobs, actor, reply.job.job_id)
    assert job.status == pb.Job.CANCELLED
    eventually(lambda: payment_of_saga(stack, reply.saga_id).state == ppb.Payment.VOIDED)
    eventually(lambda: job_of(jobs, actor, job.job_id).payment_status == pb.Job.FAILED)
    payment = payment_of_saga(stack, reply.saga_id)
    assert payment.captured_minor == 0
    assert job_of(jobs, actor, job.job_id).status == pb.Job.CANCELLED
    assert job.job_id not in public_ids(jobs)


def test_cancel_racing_the_settlement_ends_in_one_consistent_outcome(stack, jobs):
    """The company cancels while the transfer settles, several times at once. Each job ends either
    activated by the settlement and then cancelled (refunded per the policy: in full, within its
    window) or cancelled while pending (the money that arrived is returned): cancelled, never
    live afterwards, and no money kept in either case."""
    actor = company()
    # The settlement travels sandbox -> webhook -> payments -> event stream -> jobs; the cancels
    # leave at staggered moments so that rounds land before, during and after the activation.
    delays = [0.0, 0.1, 0.3, 0.6, 1.0, 1.5]
    replies = [pending_bank_transfer(jobs, actor) for _ in delays]

    def race(reply: pb.CreateJobWithPaymentResponse, delay: float) -> pb.Job:
        intent = provider_id(stack, reply.payment_id)

        def cancel_later() -> pb.Job:
            time.sleep(delay)
            return cancel(jobs, actor, reply.job.job_id)

        with ThreadPoolExecutor(max_workers=2) as pool:
            settled = pool.submit(stack.admin.settle_payment_intent, intent, "succeeded")
            cancelled = pool.submit(cancel_later)
            settled.result()
            return cancelled.result()

    with ThreadPoolExecutor(max_workers=len(replies)) as pool:
        answers = list(pool.map(race, replies, delays))
    assert {job.status for job in answers} == {pb.Job.CANCELLED}
    for reply in replies:
        job_id = reply.job.job_id
        eventually(
            lambda job_id=job_id: job_of(jobs, actor, job_id).payment_status == pb.Job.REFUNDED, 40
        )
        eventually(
            lambda reply=reply: payment_of_saga(stack, reply.saga_id).refunded_minor == FEE, 40
        )
        payment = payment_of_saga(stack, reply.saga_id)
        assert payment.captured_minor == FEE and payment.refunded_minor == FEE  # once, in full
        statuses = trail(jobs, actor, job_id)
        assert statuses[-1] == pb.Job.CANCELLED and statuses.count(pb.Job.CANCELLED) == 1
        assert statuses[-2] in (pb.Job.PENDING_PAYMENT, pb.Job.ACTIVE)
        if statuses[-2] == pb.Job.ACTIVE:  # the settlement won: a live posting was cancelled
            assert statuses[-3] == pb.Job.PENDING_PAYMENT
        assert job_of(jobs, actor, job_id).status == pb.Job.CANCELLED
    assert not {r.job.job_id for r in replies} & public_ids(jobs)
