"""The gateway's plans, credits, refunds and applications routes against fake backends: who may
call what (SEC-2), what reaches the services, and how their refusals read (PAY-11)."""

from __future__ import annotations

import httpx

from hirepay.common.v1 import common_pb2
from hirepay.jobs.v1 import jobs_service_pb2 as jobs_pb
from hirepay.payments.v1 import payments_service_pb2 as pay_pb
from hirepay_platform.errors import ErrorKind
from hirepay_platform.reasons import FailureReason
from tests.support.gateway_fakes import domain_error, make_transaction
from tests.support.gateway_harness import Backends, bearer


def status_reply(
    request: pay_pb.GetSubscriptionStatusRequest,
) -> pay_pb.GetSubscriptionStatusResponse:
    return pay_pb.GetSubscriptionStatusResponse(
        job_credits=2600,
        candidate_credits=49,
        max_job_posts=5,
        job_credits_per_post=500,
    )


async def test_credits_are_the_callers_own_company_only(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.payments.on("GetSubscriptionStatus", status_reply)
    resp = await client.get("/api/credits", headers=bearer("company", "co-1"))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "jobCredits": 2600,
        "candidateCredits": 49,
        "maxJobPosts": 5,
        "creditsPerJobPost": 500,
        "plan": "FREE_LAUNCHPAD",
        "subscription": None,
    }
    [call] = backends.payments.calls_to("GetSubscriptionStatus")
    assert (call.request.user_type, call.request.user_id) == (pay_pb.USER_TYPE_COMPANY, "co-1")
    assert (
        await client.get("/api/credits", headers=bearer("applicant", "ap-1"))
    ).status_code == 403
    assert (await client.get("/api/credits")).status_code == 401


async def test_status_is_the_callers_own(client: httpx.AsyncClient, backends: Backends) -> None:
    def active(
        request: pay_pb.GetSubscriptionStatusRequest,
    ) -> pay_pb.GetSubscriptionStatusResponse:
        txn = make_transaction("txn_ap")
        txn.subscription_start_date, txn.subscription_end_date = "2026-01-10", "2999-01-01"
        return pay_pb.GetSubscriptionStatusResponse(active=txn, premium=True)

    backends.payments.on("GetSubscriptionStatus", active)
    resp = await client.get("/api/payments/status", headers=bearer("applicant", "ap-1"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["premium"] is True and body["userType"] == "APPLICANT"
    assert body["subscription"]["status"] == "Active" and body["jobCredits"] is None
    [call] = backends.payments.calls_to("GetSubscriptionStatus")
    assert (call.request.user_type, call.request.user_id) == (pay_pb.USER_TYPE_APPLICANT, "ap-1")
    resp = await client.get("/api/payments/status", headers=bearer("customer", "cu-1"))
    assert resp.status_code == 403


async def test_plans_for_the_callers_audience(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.payments.on(
        "ListPlans",
        lambda r: pay_pb.ListPlansResponse(
            plans=[
                pay_pb.Plan(
                    code="SWIFT_HIRE",
                    user_type=pay_pb.USER_TYPE_COMPANY,
                    name="Swift Hire",
                    prices=[common_pb2.Money(amount_minor=4900, currency="USD")],
                    period_days=30,
                    job_credits=2500,
                    candidate_credits=50,
                )
            ]
        ),
    )
    resp = await client.get("/api/payments/plans", headers=bearer("company", "co-1"))
    assert resp.status_code == 200, resp.text
    [plan] = resp.json()["plans"]
    assert plan["maxJobPosts"] == 5 and plan["prices"][0]["amount"] == "49.00"
    assert backends.payments.calls_to("ListPlans")[0].request.user_type == pay_pb.USER_TYPE_COMPANY
    bad = await client.get("/api/payments/plans", params={"userType": "NOBODY"})
    assert bad.status_code == 400


async def test_only_an_admin_refunds_a_purchase(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    def refunded(request: pay_pb.RefundTransactionRequest) -> pay_pb.RefundTransactionResponse:
        txn = make_transaction(request.transaction_id)
        txn.status = pay_pb.Transaction.REFUNDED
        return pay_pb.RefundTransactionResponse(
            transaction=txn,
            revocation_done=True,
            revoked=[pay_pb.CreditAmount(unit="JOB_CREDIT", amount=1500)],
            used=[pay_pb.CreditAmount(unit="JOB_CREDIT", amount=1000)],
        )

    backends.payments.on("RefundTransaction", refunded)
    path = "/api/payments/transactions/txn_1/refund"
    assert (await client.post(path, headers=bearer("company", "co-1"))).status_code == 403
    resp = await client.post(path, headers=bearer("admin", "ops-1"))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "transactionId": "txn_1",
        "status": "REFUNDED",
        "revocationDone": True,
        "revoked": {"jobCredits": 1500, "candidateCredits": 0},
        "used": {"jobCredits": 1000, "candidateCredits": 0},
    }
    [call] = backends.payments.calls_to("RefundTransaction")
    assert call.request.actor == "ops-1" and call.request.reason == "requested_by_customer"
    backends.payments.on(
        "RefundTransaction", domain_error("TRANSACTION_NOT_FOUND", ErrorKind.NOT_FOUND)
    )
    assert (await client.post(path, headers=bearer("admin", "ops-1"))).status_code == 404


async def test_applications_roles_and_refusals(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    body = {"name": "Ada", "email": "ada@example.test"}
    path = "/api/jobs/job_1/applications"
    assert (
        await client.post(path, json=body, headers=bearer("company", "co-1"))
    ).status_code == 403
    backends.jobs.on("Apply", domain_error("ALREADY_APPLIED", ErrorKind.ALREADY_EXISTS))
    again = await client.post(path, json=body, headers=bearer("applicant", "ap-1"))
    assert again.status_code == 409 and again.json()["error"] == "ALREADY_APPLIED"
    backends.jobs.on("Apply", domain_error("JOB_NOT_FOUND", ErrorKind.NOT_FOUND))
    missing = await client.post(path, json=body, headers=bearer("applicant", "ap-1"))
    assert missing.status_code == 404
    [call, _] = backends.jobs.calls_to("Apply")
    assert (call.request.actor.user_id, call.request.actor.role) == ("ap-1", "applicant")

    view = "/api/applications/app_1/view"
    assert (await client.post(view, headers=bearer("applicant", "ap-1"))).status_code == 403
    backends.jobs.on(
        "ViewApplicant",
        domain_error(FailureReason.INSUFFICIENT_CREDITS, ErrorKind.FAILED_PRECONDITION),
    )
    broke = await client.post(view, headers=bearer("company", "co-1"))
    assert broke.status_code == 402 and broke.json()["error"] == "INSUFFICIENT_CREDITS"
    assert "application" not in broke.json()
    backends.jobs.on(
        "ViewApplicant",
        lambda r: jobs_pb.ApplicationResponse(
            application=jobs_pb.Application(
                application_id=r.application_id,
                job_id="job_1",
                status=jobs_pb.Application.PENDING,
                details_included=True,
                applicant_id="ap-1",
                applicant_name="Ada",
                applicant_email="ada@example.test",
            ),
            charged=True,
        ),
    )
    paid = await client.post(view, headers=bearer("company", "co-1"))
    assert paid.status_code == 200, paid.text
    assert paid.json()["charged"] is True
    assert paid.json()["application"]["applicant"]["email"] == "ada@example.test"
    decision = await client.post(
        "/api/applications/app_1/decision",
        json={"decision": "maybe"},
        headers=bearer("company", "co-1"),
    )
    assert decision.status_code == 400
