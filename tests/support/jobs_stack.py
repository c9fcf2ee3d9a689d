"""Helpers of the jobs gRPC tests: the real participants' processes and small clients of payments
and the wallet (the webhook relay standing in for the gateway is tests.support.webhook_relay)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import grpc

from hirepay.common.v1 import common_pb2
from hirepay.jobs.v1 import jobs_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2 as ppb
from hirepay.payments.v1 import payments_service_pb2_grpc as ppb_grpc
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from hirepay_dev.procs import Process
from hirepay_dev.sandbox_client import SandboxAdmin
from hirepay_dev.services import JOBS, RunningService, start_service
from hirepay_platform.grpc_status import error_info
from tests.support import jobs_process

FEE = 14900  # engineering, USD, from the default price list
CREDITS_FEE = 500
WEBHOOK_SECRET = "whsec_jobstestsecret0000000000000000"

FIELDS = pb.JobFields(
    title="Senior Payments Engineer",
    description="Build the payment backbone of a job marketplace.",
    location="Remote",
    employment_type=pb.FULL_TIME,
    category="engineering",
)


@dataclass
class Stack:
    """The real participants: the Stripe sandbox, payments and the wallet."""

    sandbox: Process
    admin: SandboxAdmin
    payments: RunningService
    wallet: RunningService
    payments_stub: ppb_grpc.PaymentsServiceStub
    wallet_stub: wpb_grpc.WalletServiceStub


# Jobs whose title contains this cannot be activated (PAY-7 tests; see tests.support.jobs_faults).
REFUSE_ACTIVATION_MARKER = "[fail-activation]"


def start_jobs(
    stack: Stack, database_url: str, *, crash_after: str = "", **env: str
) -> RunningService:
    """The jobs service as a real process wired to the stack, with fast workers for tests, and
    faults injected from tests: it dies (exit 137) right after the saga step `crash_after`."""
    return start_service(
        JOBS,
        database_url,
        module=jobs_process.MODULE,
        env={
            "JOBS_PAYMENTS_TARGET": stack.payments.target,
            "JOBS_WALLET_TARGET": stack.wallet.target,
            "JOBS_RPC_TIMEOUT_SECONDS": "8",
            "JOBS_LEASE_SECONDS": "2",
            "JOBS_RECOVERY_INTERVAL_SECONDS": "0.2",
            "JOBS_RETRY_BASE_SECONDS": "0.1",
            "JOBS_RETRY_MAX_SECONDS": "1",
            "JOBS_SETTLEMENT_POLL_SECONDS": "1",
            jobs_process.REFUSE_ACTIVATION_MARKER: REFUSE_ACTIVATION_MARKER,
            jobs_process.CRASH_AFTER_STEP: crash_after,
            **env,
        },
        log_name=f"jobs-tests-jobs-{uuid.uuid4().hex[:6]}",
    )


def company() -> common_pb2.Actor:
    return common_pb2.Actor(user_id=f"co_{uuid.uuid4().hex[:10]}", role="company")


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
    """Issue `amount` job credits to `owner` (as a plan purchase would); returns the account id."""
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
