"""The jobs service as a real process with the real payments and wallet processes and the Stripe
sandbox: card success, decline, credits, idempotent twins, and kill -9 crash recovery."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import pytest

from hirepay.common.v1 import common_pb2
from hirepay.jobs.v1 import jobs_service_pb2 as pb
from hirepay.jobs.v1 import jobs_service_pb2_grpc as pb_grpc
from hirepay.payments.v1 import payments_service_pb2 as ppb
from hirepay.payments.v1 import payments_service_pb2_grpc as ppb_grpc
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from hirepay_dev.procs import Process
from hirepay_dev.sandbox_client import start_sandbox
from hirepay_dev.services import JOBS, PAYMENTS, WALLET, RunningService, start_service
from hirepay_platform.grpc_status import error_info

FEE = 14900  # engineering, USD, from the default price list
CREDITS_FEE = 500


@dataclass
class Stack:
    payments: RunningService
    wallet: RunningService
    sandbox: Process
    payments_stub: ppb_grpc.PaymentsServiceStub
    wallet_stub: wpb_grpc.WalletServiceStub


@pytest.fixture(scope="module")
def stack(make_service_database: Callable[[str], str]) -> Iterator[Stack]:
    sandbox, sandbox_url = start_sandbox(name="jobs-tests-sandbox")
    payments = start_service(
        PAYMENTS,
        make_service_database("payments"),
        env={
            "PAYMENTS_STRIPE_API_BASE": sandbox_url,
            "PAYMENTS_STRIPE_API_KEY": "sk_test_jobstests",
            "PAYMENTS_POLL_INTERVAL_SECONDS": "0.2",
            "PAYMENTS_POLL_MAX_INTERVAL_SECONDS": "0.5",
        },
        log_name="jobs-tests-payments",
    )
    wallet = start_service(WALLET, make_service_database("wallet"), log_name="jobs-tests-wallet")
    pch = grpc.insecure_channel(payments.target)
    wch = grpc.insecure_channel(wallet.target)
    yield Stack(
        payments,
        wallet,
        sandbox,
        ppb_grpc.PaymentsServiceStub(pch),
        wpb_grpc.WalletServiceStub(wch),
    )
    pch.close()
    wch.close()
    for proc in (payments, wallet):
        proc.stop()
    sandbox.stop()


def start_jobs(stack: Stack, database_url: str, **env: str) -> RunningService:
    return start_service(
        JOBS,
        database_url,
        env={
            "JOBS_PAYMENTS_TARGET": stack.payments.target,
            "JOBS_WALLET_TARGET": stack.wallet.target,
            "JOBS_RPC_TIMEOUT_SECONDS": "8",
            "JOBS_LEASE_SECONDS": "2",
            "JOBS_RECOVERY_INTERVAL_SECONDS": "0.2",
            "JOBS_RETRY_BASE_SECONDS": "0.1",
            "JOBS_RETRY_MAX_SECONDS": "1",
            "JOBS_SETTLEMENT_POLL_SECONDS": "1",
            **env,
        },
        log_name=f"jobs-tests-jobs-{uuid.uuid4().hex[:6]}",
    )


@pytest.fixture(scope="module")
def jobs_db(make_service_database: Callable[[str], str]) -> str:
    return make_service_database("jobs")


@pytest.fixture(scope="module")
def jobs(stack: Stack, jobs_db: str) -> Iterator[pb_grpc.JobsServiceStub]:
    service = start_jobs(stack, jobs_db)
    channel = grpc.insecure_channel(service.target)
    yield pb_grpc.JobsServiceStub(channel)
    channel.close()
    service.stop()


def company() -> common_pb2.Actor:
    return common_pb2.Actor(user_id=f"co_{uuid.uuid4().hex[:10]}", role="company")


FIELDS = pb.JobFields(
    title="Senior Payments Engineer",
    description="Build the payment backbone of a job marketplace.",
    location="Remote",
    employment_type=pb.FULL_TIME,
    category="engineering",
)


def post_request(actor, method="card", token="pm_card_visa", key=None, **kw):
    return pb.CreateJobWithPaymentRequest(
        request_id=key or uuid.uuid4().hex,
        actor=actor,
        job=kw.pop("job", FIELDS),
        payment=pb.PaymentChoice(method=method, payment_method=token),
        accept_terms=True,
        terms_version="2026-11",
        **kw,
    )


def reason_of(exc: grpc.RpcError) -> tuple[str, dict[str, str]]:
    info = error_info(exc)
    assert info is not None, exc
    return info.reason, dict(info.metadata)


def payment_of_saga(stack: Stack, saga_id: str) -> ppb.Payment:
    branch = common_pb2.TccBranch(global_tx_id=saga_id, branch_id="payment")
    return stack.payments_stub.GetPaymentByBranch(
        ppb.GetPaymentByBranchRequest(branch=branch), timeout=5
    ).payment


def credits_account(stack: Stack, owner: str, kind=wpb.ACCOUNT_KIND_USER, allow_negative=False):
    return stack.wallet_stub.OpenAccount(
        wpb.OpenAccountRequest(
            request_id=uuid.uuid4().hex,
            owner_id=owner,
            currency="JOB_CREDIT",
            kind=kind,
            allow_negative=allow_negative,
        ),
        timeout=5,
    ).account


def balance(stack: Stack, account_id: str) -> wpb.Balance:
    return stack.wallet_stub.GetAccount(
        wpb.GetAccountRequest(account_id=account_id), timeout=5
    ).account.balance


def grant_credits(stack: Stack, owner: str, amount: int) -> str:
    issuance = credits_account(stack, "platform", wpb.ACCOUNT_KIND_ISSUANCE, allow_negative=True)
    target = credits_account(stack, owner)
    stack.wallet_stub.Transfer(
        wpb.TransferRequest(
            request_id=uuid.uuid4().hex,
            transfer_id=f"grant-{uuid.uuid4().hex}",
            legs=[
                wpb.TransferLeg(
                    from_account_id=issuance.account_id,
                    to_account_id=target.account_id,
                    amount=common_pb2.Money(amount_minor=amount, currency="JOB_CREDIT"),
                )
            ],
            description="test grant",
        ),
        timeout=5,
    )
    return target.account_id


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
    assert len(mine) == 1
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


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


@pytest.mark.slow
@pytest.mark.parametrize("step", ["pending", "try", "activate", "confirm"])
def test_kill_9_at_a_saga_step_then_recovery_is_consistent(stack, make_service_database, step):
    database = make_service_database("jobs")
    service = start_jobs(stack, database, JOBS_CRASH_AFTER_STEP=step)
    actor = company()
    request = post_request(actor)
    with grpc.insecure_channel(service.target) as channel:
        stub = pb_grpc.JobsServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.CreateJobWithPayment(request, timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert service.process.popen is not None
    assert service.process.popen.wait(10) == 137
    # Restart the same service (same ports and database) without the crash switch.
    service.process.env = {
        k: v for k, v in service.process.env.items() if k != "JOBS_CRASH_AFTER_STEP"
    }
    service.process.popen = None
    service.process.start(30)
    try:
        with grpc.insecure_channel(service.target) as channel:
            stub = pb_grpc.JobsServiceStub(channel)

            def settled() -> bool:
                jobs_now = stub.ListMyJobs(pb.ListMyJobsRequest(actor=actor), timeout=5).jobs
                return len(jobs_now) == 1 and jobs_now[0].payment_status in (
                    pb.Job.COMPLETED,
                    pb.Job.FAILED,
                    pb.Job.REFUNDED,
                )

            wait_for(settled)
            (job,) = stub.ListMyJobs(pb.ListMyJobsRequest(actor=actor), timeout=5).jobs
            # The client retrying with its key gets the recovered answer.
            reply = stub.CreateJobWithPayment(request, timeout=30)
            assert reply.replayed and reply.job.job_id == job.job_id
            payment = payment_of_saga(stack, reply.saga_id)
            if job.status == pb.Job.ACTIVE:
                assert job.payment_status == pb.Job.COMPLETED
                assert payment.state == ppb.Payment.CAPTURED and payment.captured_minor == FEE
            else:
                assert job.status == pb.Job.PAYMENT_FAILED
                assert payment.captured_minor == payment.refunded_minor
                assert payment.state != ppb.Payment.AUTHORIZED
            # The crash happened after the Try: recovery must have finished the posting.
            if step in ("try", "activate", "confirm"):
                assert job.status == pb.Job.ACTIVE
    finally:
        service.stop()
