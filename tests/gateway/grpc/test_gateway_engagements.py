"""The gateway's escrow routes against fake backends: who may call what (parties, customers,
admins; 403 before jobs is called), what reaches jobs (the signed actor, the action), and how
jobs' refusals read over HTTP (PAY-11): others' engagements 404, a frozen escrow 409, short of
coins 402."""

from __future__ import annotations

import httpx
import jwt

from hirepay.common.v1 import common_pb2
from hirepay.jobs.v1 import jobs_service_pb2 as jobs_pb
from hirepay_platform.errors import ErrorKind
from hirepay_platform.identity import ACTOR_HEADER
from tests.support.gateway_fakes import domain_error, ts
from tests.support.gateway_harness import Backends, bearer


def engagement(state: int = jobs_pb.Engagement.COMPLETED) -> jobs_pb.EngagementResponse:
    money = {"currency": "USD"}
    return jobs_pb.EngagementResponse(
        engagement=jobs_pb.Engagement(
            engagement_id="eng_1",
            job_id="mjob_1",
            customer_id="cust-1",
            contractor_id="dev-1",
            amount=common_pb2.Money(amount_minor=100_000, **money),
            acceptance_fee=common_pb2.Money(amount_minor=10_000, **money),
            escrow=common_pb2.Money(amount_minor=90_000, **money),
            funding=jobs_pb.FUNDING_SOURCE_CARD,
            state=state,  # type: ignore[arg-type]
            created_at=ts(),
        ),
        steps=[
            jobs_pb.MoneyStep(
                kind="complete",
                state="done",
                transfer_id="engagement:eng_1:complete",
                to_revenue_minor=20_000,
                to_contractor_minor=70_000,
            )
        ],
    )


async def test_the_customer_completes_as_themselves(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.jobs.on("CompleteEngagement", engagement())
    resp = await client.post(
        "/api/engagements/eng_1/complete", headers=bearer("customer", "cust-1")
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["state"], body["amountMinor"], body["escrowMinor"]) == (
        "completed",
        100_000,
        90_000,
    )
    assert body["steps"][0]["toContractorMinor"] == 70_000
    [call] = backends.jobs.calls_to("CompleteEngagement")
    assert call.request.engagement_id == "eng_1"
    actor = jwt.decode(call.metadata[ACTOR_HEADER], options={"verify_signature": False})
    assert (actor["sub"], actor["role"]) == ("cust-1", "customer")


async def test_refusals_read_as_the_error_contract(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.jobs.on(
        "CompleteEngagement", domain_error("ENGAGEMENT_NOT_FOUND", ErrorKind.NOT_FOUND)
    )
    hidden = await client.post("/api/engagements/eng_x/complete", headers=bearer("customer", "c"))
    assert hidden.status_code == 404
    backends.jobs.on(
        "CancelEngagement", domain_error("ESCROW_FROZEN", ErrorKind.FAILED_PRECONDITION)
    )
    frozen = await client.post("/api/engagements/eng_1/cancel", headers=bearer("customer", "c"))
    assert (frozen.status_code, frozen.json()["error"]) == (409, "ESCROW_FROZEN")
    backends.jobs.on(
        "PayJobWithCoins", domain_error("INSUFFICIENT_FUNDS", ErrorKind.FAILED_PRECONDITION)
    )
    short = await client.post(
        "/api/coins/job-payment",
        json={"jobId": "mjob_1", "freelancerId": "dev-1", "amount": 5},
        headers=bearer("customer", "c"),
    )
    assert (short.status_code, short.json()["error"]) == (402, "INSUFFICIENT_FUNDS")


async def test_admin_routes_are_for_admins_only(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    for role in ("customer", "contractor", "company"):
        listed = await client.get("/api/admin/disputes", headers=bearer(role, "u-1"))
        assert listed.status_code == 403, role
        resolved = await client.post(
            "/api/admin/disputes/dsp_1/resolve",
            json={"resolution": "refund"},
            headers=bearer(role, "u-1"),
        )
        assert resolved.status_code == 403, role
    assert backends.jobs.calls_to("ListDisputes") == []
    assert backends.jobs.calls_to("ResolveDispute") == []
    backends.jobs.on("ListDisputes", jobs_pb.ListDisputesResponse())
    ok = await client.get(
        "/api/admin/disputes", params={"state": "open"}, headers=bearer("admin", "ops")
    )
    assert ok.status_code == 200 and ok.json() == {"disputes": [], "nextPageToken": None}
    [call] = backends.jobs.calls_to("ListDisputes")
    assert call.request.state == jobs_pb.Dispute.OPEN
    bad = await client.post(
        "/api/admin/disputes/dsp_1/resolve",
        json={"resolution": "halve"},
        headers=bearer("admin", "ops"),
    )
    assert bad.status_code == 400


async def test_a_direct_job_payment_opens_the_checkout(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    opened = engagement(jobs_pb.Engagement.OPEN).engagement
    backends.jobs.on(
        "StartJobPayment",
        jobs_pb.StartJobPaymentResponse(
            engagement=opened, payment_id="pay_1", checkout_url="https://pay.example/1"
        ),
    )
    body = {
        "jobId": "mjob_1",
        "freelancerId": "dev-1",
        "amount": 100_000,
        "returnUrl": "https://app.example/paid",
        "cancelUrl": "https://app.example/cancelled",
    }
    headers = {**bearer("customer", "cust-1"), "Idempotency-Key": "jp-1"}
    resp = await client.post("/api/payments/job-payment", json=body, headers=headers)
    assert resp.status_code == 201, resp.text
    assert resp.json()["checkoutUrl"] == "https://pay.example/1"
    assert resp.json()["engagement"]["state"] == "open"
    [call] = backends.jobs.calls_to("StartJobPayment")
    assert (call.request.amount.amount_minor, call.request.amount.currency) == (100_000, "USD")
    assert call.request.request_id == "jp-1"
    evil = await client.post(
        "/api/payments/job-payment",
        json={**body, "returnUrl": "https://evil.example/x"},
        headers=bearer("customer", "cust-1"),
    )
    assert evil.status_code == 400
    contractor = await client.post(
        "/api/payments/job-payment", json=body, headers=bearer("contractor", "dev-1")
    )
    assert contractor.status_code == 403
    assert len(backends.jobs.calls_to("StartJobPayment")) == 1
