"""The gateway's marketplace routes against fake backends: roles (customer, contractor, admin),
what reaches jobs (the signed actor, the offer's fields, a scoped idempotency key), others' objects
as 404, and how jobs' refusals read over HTTP (PAY-11)."""

from __future__ import annotations

import httpx
import jwt

from hirepay.common.v1 import common_pb2
from hirepay.jobs.v1 import jobs_service_pb2 as jobs_pb
from hirepay_platform.errors import ErrorKind
from hirepay_platform.identity import ACTOR_HEADER
from tests.support.gateway_fakes import domain_error, ts
from tests.support.gateway_harness import Backends, bearer

OFFER_BODY = {
    "jobId": "mjob_1",
    "contractorId": "dev-1",
    "amount": {"amount_minor": 100_000, "currency": "usd"},
    "funding": "card",
    "paymentMethod": "pm_card_visa",
}


def offer(state: int = jobs_pb.Offer.PENDING, **kw: object) -> jobs_pb.Offer:
    return jobs_pb.Offer(
        offer_id="offer_1",
        job_id="mjob_1",
        customer_id="cust-1",
        contractor_id="dev-1",
        amount=common_pb2.Money(amount_minor=100_000, currency="USD"),
        funding=jobs_pb.FUNDING_SOURCE_CARD,
        state=state,  # type: ignore[arg-type]
        payment_id="pay_1",
        expires_at=ts(),
        created_at=ts(),
        **kw,  # type: ignore[arg-type]
    )


async def test_a_customer_sends_an_offer_as_themselves(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.jobs.on("SendOffer", jobs_pb.OfferResponse(offer=offer()))
    headers = {**bearer("customer", "cust-1"), "Idempotency-Key": "k-1"}
    resp = await client.post("/api/bidding", json=OFFER_BODY, headers=headers)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["engagement"] is None
    assert (body["offer"]["id"], body["offer"]["state"], body["offer"]["funding"]) == (
        "offer_1",
        "pending",
        "card",
    )
    assert body["offer"]["amount"] == {"amount_minor": 100_000, "currency": "USD"}
    [call] = backends.jobs.calls_to("SendOffer")
    request = call.request
    assert (request.job_id, request.contractor_id, request.payment_method) == (
        "mjob_1",
        "dev-1",
        "pm_card_visa",
    )
    assert (request.amount.amount_minor, request.amount.currency) == (100_000, "USD")
    assert request.funding == jobs_pb.FUNDING_SOURCE_CARD
    assert request.request_id.startswith("offer_") and "k-1" not in request.request_id
    assert request.request_fingerprint
    actor = jwt.decode(call.metadata[ACTOR_HEADER], options={"verify_signature": False})
    assert (actor["sub"], actor["role"]) == ("cust-1", "customer")


async def test_roles_and_bad_bodies_never_reach_jobs(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    assert (await client.post("/api/bidding", json=OFFER_BODY)).status_code == 401
    for role in ("company", "contractor", "applicant"):
        resp = await client.post("/api/bidding", json=OFFER_BODY, headers=bearer(role, "u-1"))
        assert resp.status_code == 403, (role, resp.text)
    for bad in (
        {**OFFER_BODY, "amount": {"amount_minor": -1, "currency": "USD"}},
        {**OFFER_BODY, "funding": "cash"},
        {**OFFER_BODY, "surprise": 1},
    ):
        resp = await client.post("/api/bidding", json=bad, headers=bearer("customer", "cust-1"))
        assert resp.status_code == 400 and resp.json()["error"] == "VALIDATION_FAILED"
    customer_only = await client.post(
        "/api/marketplace/jobs",
        json={"title": "Fix it", "description": "Fix my kitchen sink."},
        headers=bearer("contractor", "dev-1"),
    )
    assert customer_only.status_code == 403
    contractor_only = await client.post(
        "/api/bidding/offer_1/accept", headers=bearer("customer", "cust-1")
    )
    assert contractor_only.status_code == 403
    assert backends.jobs.calls_to("SendOffer") == []
    assert backends.jobs.calls_to("AcceptOffer") == []


async def test_jobs_refusals_read_as_the_error_contract(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    contractor = bearer("contractor", "dev-2")
    backends.jobs.on(
        "AcceptOffer", domain_error("OFFER_NOT_FOUND", ErrorKind.NOT_FOUND, offer_id="offer_1")
    )
    hidden = await client.post("/api/bidding/offer_1/accept", headers=contractor)
    assert hidden.status_code == 404 and hidden.json()["error"] == "NOT_FOUND"

    backends.jobs.on(
        "AcceptOffer", domain_error("JOB_ALREADY_TAKEN", ErrorKind.ABORTED, job_id="mjob_1")
    )
    lost = await client.post("/api/bidding/offer_1/accept", headers=contractor)
    assert lost.status_code == 409 and lost.json()["error"] == "JOB_ALREADY_TAKEN", lost.text

    backends.jobs.on("SendOffer", domain_error("INSUFFICIENT_FUNDS", ErrorKind.FAILED_PRECONDITION))
    short = await client.post(
        "/api/bidding",
        json={**OFFER_BODY, "funding": "coins", "amount": {"amount_minor": 5, "currency": "COIN"}},
        headers=bearer("customer", "cust-1"),
    )
    assert short.status_code == 402 and short.json()["error"] == "INSUFFICIENT_FUNDS"


async def test_an_accepted_offer_shows_its_engagement(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    engagement = jobs_pb.Engagement(
        engagement_id="eng_1",
        job_id="mjob_1",
        customer_id="cust-1",
        contractor_id="dev-1",
        amount=common_pb2.Money(amount_minor=100_000, currency="USD"),
        acceptance_fee=common_pb2.Money(amount_minor=10_000, currency="USD"),
        escrow=common_pb2.Money(amount_minor=90_000, currency="USD"),
        escrow_account_id="acc-escrow",
        funding=jobs_pb.FUNDING_SOURCE_CARD,
        state=jobs_pb.Engagement.ASSIGNED,
        created_at=ts(),
        assigned_at=ts(),
    )
    accepted = offer(jobs_pb.Offer.ACCEPTED, engagement_id="eng_1", decided_at=ts())
    backends.jobs.on("AcceptOffer", jobs_pb.OfferResponse(offer=accepted, engagement=engagement))
    resp = await client.post("/api/bidding/offer_1/accept", headers=bearer("contractor", "dev-1"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["offer"]["state"] == "accepted"
    assert body["engagement"]["state"] == "assigned"
    assert body["engagement"]["acceptanceFee"] == {"amount_minor": 10_000, "currency": "USD"}
    assert body["engagement"]["escrow"] == {"amount_minor": 90_000, "currency": "USD"}
    [call] = backends.jobs.calls_to("AcceptOffer")
    assert call.request.offer_id == "offer_1"
