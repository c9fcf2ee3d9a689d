"""Issue 12 §3 and §4 end to end: below the gateway every service authenticates its caller, trusts
only the gateway-signed actor, and enforces object rules itself; the posting rate limit holds
across gateway replicas."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest

from hirepay.common.v1 import common_pb2
from hirepay.jobs.v1 import jobs_service_pb2 as jobs_pb
from hirepay.jobs.v1 import jobs_service_pb2_grpc as jobs_grpc
from hirepay.payments.v1 import payments_service_pb2 as pay_pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pay_grpc
from hirepay.wallet.v1 import wallet_service_pb2 as wallet_pb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wallet_grpc
from hirepay_platform.identity import Actor
from tests.e2e.conftest import System, job_fields, new_company
from tests.e2e.test_subscriptions import subscribe
from tests.support.gateway_harness import start_gateway
from tests.support.service_auth import call_metadata

FORGED_SECRET = "not-the-deployment-secret-0123456789abcdefghij"
ADMIN_FIELD = common_pb2.Actor(user_id="root", role="admin")


def _code(call, request, metadata) -> grpc.StatusCode:
    try:
        call(request, metadata=metadata, timeout=10)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def channels(system: System) -> Iterator[dict[str, grpc.Channel]]:
    opened = {
        name: grpc.insecure_channel(svc.target) for name, svc in system.stack.services.items()
    }
    yield opened
    for channel in opened.values():
        channel.close()


def _draft(system: System, company: str) -> str:
    response = system.http.post(
        "/api/jobs/drafts", json=job_fields(), headers=system.headers(company)
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_a_direct_get_job_needs_a_service_token_and_a_signed_actor(system, channels) -> None:
    owner = new_company()
    draft = _draft(system, owner)
    get_job = jobs_grpc.JobsServiceStub(channels["jobs"]).GetJob
    # The request field claims admin: it grants nothing (the field is ignored).
    request = jobs_pb.GetJobRequest(actor=ADMIN_FIELD, job_id=draft)
    assert _code(get_job, request, []) == grpc.StatusCode.UNAUTHENTICATED
    forged = call_metadata("gateway", "jobs", secret=FORGED_SECRET)
    assert _code(get_job, request, forged) == grpc.StatusCode.UNAUTHENTICATED
    # A valid token but no actor: anonymous, and a draft answers as if absent.
    anonymous = call_metadata("gateway", "jobs")
    assert _code(get_job, request, anonymous) == grpc.StatusCode.NOT_FOUND
    # Another company, signed by the gateway: not its draft.
    other = call_metadata("gateway", "jobs", Actor(new_company(), "company"))
    assert _code(get_job, request, other) == grpc.StatusCode.NOT_FOUND
    # A forged actor assertion (signed with another secret) is refused outright.
    forged_actor = [
        *call_metadata("gateway", "jobs"),
        call_metadata("gateway", "jobs", Actor("root", "admin"), secret=FORGED_SECRET)[1],
    ]
    assert _code(get_job, request, forged_actor) == grpc.StatusCode.UNAUTHENTICATED
    # Only the gateway may call jobs at all.
    assert (
        _code(get_job, request, call_metadata("payments", "jobs"))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    # The owner and a real admin (as the gateway signed them) read it.
    for actor in (Actor(owner, "company"), Actor("ops-1", "admin")):
        reply = get_job(request, metadata=call_metadata("gateway", "jobs", actor), timeout=10)
        assert reply.job.job_id == draft


def test_payments_reads_and_refunds_only_for_the_owner_or_an_internal_caller(
    system, channels
) -> None:
    owner = new_company()
    response = subscribe(system, owner)
    assert response.status_code == 200, response.text
    txn = response.json()["transactionId"]
    stub = pay_grpc.PaymentsServiceStub(channels["payments"])
    request = pay_pb.GetTransactionRequest(transaction_id=txn)
    assert _code(stub.GetTransaction, request, []) == grpc.StatusCode.UNAUTHENTICATED
    stranger = call_metadata("gateway", "payments", Actor(new_company(), "company"))
    assert _code(stub.GetTransaction, request, stranger) == grpc.StatusCode.NOT_FOUND
    anonymous = call_metadata("gateway", "payments")
    assert _code(stub.GetTransaction, request, anonymous) == grpc.StatusCode.NOT_FOUND
    mine = call_metadata("gateway", "payments", Actor(owner, "company"))
    assert _code(stub.GetTransaction, request, mine) == grpc.StatusCode.OK
    # Refund: the wallet has no right to it; through the gateway a stranger's answers as absent.
    refund = pay_pb.RefundRequest(request_id="r-1", payment_id="pay_missing", amount_minor=1)
    assert _code(stub.Refund, refund, []) == grpc.StatusCode.UNAUTHENTICATED
    assert (
        _code(stub.Refund, refund, call_metadata("wallet", "payments"))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    # Subscribing someone else through the gateway is refused by payments itself.
    other = pay_pb.SubscribeRequest(
        request_id="s-1",
        user_type=pay_pb.USER_TYPE_COMPANY,
        user_id=owner,
        email="x@example.test",
        plan="MONTHLY",
        payment_method="STRIPE",
        return_url="https://app.example/ok",
        cancel_url="https://app.example/cancel",
    )
    assert _code(stub.Subscribe, other, stranger) == grpc.StatusCode.PERMISSION_DENIED


def test_wallet_transfers_are_for_internal_callers_only(system, channels) -> None:
    stub = wallet_grpc.WalletServiceStub(channels["wallet"])
    request = wallet_pb.TransferRequest(request_id="t-1")
    assert _code(stub.Transfer, request, []) == grpc.StatusCode.UNAUTHENTICATED
    for caller in ("gateway", "auditor"):
        metadata = call_metadata(
            caller, "wallet", Actor("root", "admin") if caller == "gateway" else None
        )
        assert _code(stub.Transfer, request, metadata) == grpc.StatusCode.PERMISSION_DENIED
    # jobs may: the empty transfer reaches the ledger's own validation.
    assert (
        _code(stub.Transfer, request, call_metadata("jobs", "wallet"))
        == grpc.StatusCode.INVALID_ARGUMENT
    )


def test_the_posting_rate_limit_holds_across_gateway_replicas(system) -> None:
    services = system.stack.services
    env = {
        "GATEWAY_JOBS_TARGET": services["jobs"].target,
        "GATEWAY_PAYMENTS_TARGET": services["payments"].target,
        "GATEWAY_WALLET_TARGET": services["wallet"].target,
        "GATEWAY_RATE_LIMIT_PER_MINUTE": "3",
    }
    replicas = [start_gateway(f"gateway-replica-{i}", env) for i in range(2)]
    try:
        company = new_company()
        statuses: list[int] = []
        remaining: list[str] = []
        for attempt in range(5):
            _, url = replicas[attempt % 2]
            # Terms not accepted: jobs refuses it cheaply, after the attempt is counted.
            response = httpx.post(
                f"{url}/api/jobs/create-with-payment",
                json={
                    "job": job_fields(),
                    "payment": {"method": "card", "payment_method": "pm_card_visa"},
                    "accept_terms": False,
                },
                headers=system.headers(company, key=f"rl-{attempt}"),
                timeout=30,
            )
            statuses.append(response.status_code)
            remaining.append(response.headers.get("RateLimit", ""))
        assert [s == 429 for s in statuses] == [False, False, False, True, True], statuses
        # One bucket: the quota counts down across both replicas.
        assert [r.split(";r=")[1].split(";")[0] for r in remaining] == ["2", "1", "0", "0", "0"]
    finally:
        for process, _ in replicas:
            process.stop()
