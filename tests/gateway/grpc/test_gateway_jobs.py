"""Jobs routes: drafts, preview, public list, own jobs, cancel, transitions, and object-level
authorization (SEC-2) enforced at the edge even when a backend answers more than it should."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from hirepay.common.v1 import common_pb2
from hirepay.jobs.v1 import jobs_service_pb2 as jobs_pb
from hirepay_platform.errors import ErrorKind
from tests.support.gateway_fakes import domain_error, make_job, ts
from tests.support.gateway_harness import Backends, bearer

A = bearer("company", "company-a")
B = bearer("company", "company-b")
ADMIN = bearer("admin", "admin-1")

DRAFT = {
    "title": "Data Engineer",
    "description": "Pipelines, warehouses and a lot of SQL every day.",
    "location": "Berlin",
    "employment_type": "contract",
    "category": "engineering",
}


def owned_by_a(status: int) -> Any:
    return lambda r: jobs_pb.JobResponse(job=make_job(r.job_id, "company-a", status))


async def test_create_draft_forwards_fields_and_answers_201(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    resp = await client.post("/api/jobs/drafts", json=DRAFT, headers=A)
    assert resp.status_code == 201, resp.text
    data = resp.json()
    assert data["status"] == "draft"
    assert data["title"] == "Data Engineer"
    assert data["employment_type"] == "contract"
    assert data["salary_range"] is None
    assert data["payment_id"] is None and data["payment_status"] is None
    [call] = backends.jobs.calls_to("CreateDraft")
    assert call.request.actor.user_id == "company-a"
    assert call.request.fields.employment_type == jobs_pb.CONTRACT
    assert call.request.request_id


async def test_draft_idempotency_key_is_scoped_to_the_caller(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    for who in (A, A, B):
        await client.post("/api/jobs/drafts", json=DRAFT, headers={**who, "Idempotency-Key": "d-1"})
    ids = [c.request.request_id for c in backends.jobs.calls_to("CreateDraft")]
    assert ids[0] == ids[1]
    assert ids[2] != ids[0]


async def test_draft_field_errors_from_the_jobs_service(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.jobs.on(
        "CreateDraft",
        domain_error(
            "VALIDATION_FAILED", ErrorKind.INVALID_ARGUMENT, title="must be 3-200 characters"
        ),
    )
    # A title within the gateway's own bounds: the service's field errors are passed on as they are.
    resp = await client.post("/api/jobs/drafts", json={**DRAFT, "title": "xyz"}, headers=A)
    assert resp.status_code == 400
    assert resp.json()["fields"] == {"title": "must be 3-200 characters"}


async def test_patch_sends_only_the_fields_given(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.jobs.on("GetJob", owned_by_a(jobs_pb.Job.DRAFT))
    backends.jobs.on(
        "UpdateDraft",
        lambda r: jobs_pb.JobResponse(job=make_job(r.job_id, "company-a", jobs_pb.Job.DRAFT)),
    )
    resp = await client.patch(
        "/api/jobs/drafts/job_d1",
        json={
            "title": "Staff Engineer",
            "salary_range": {"min_minor": 100, "max_minor": 200, "currency": "eur"},
        },
        headers=A,
    )
    assert resp.status_code == 200, resp.text
    [call] = backends.jobs.calls_to("UpdateDraft")
    assert call.request.job_id == "job_d1"
    assert sorted(call.request.update_mask.paths) == [
        "salary_currency",
        "salary_max_minor",
        "salary_min_minor",
        "title",
    ]
    assert call.request.fields.title == "Staff Engineer"
    assert call.request.fields.salary_currency == "EUR"


async def test_empty_patch_is_refused(client: httpx.AsyncClient, backends: Backends) -> None:
    resp = await client.patch("/api/jobs/drafts/job_d1", json={}, headers=A)
    assert resp.status_code == 400
    assert backends.jobs.calls_to("UpdateDraft") == []


@pytest.mark.parametrize(
    ("method", "url", "payload", "rpc"),
    [
        ("PATCH", "/api/jobs/drafts/job_x", {"title": "Mine now"}, "UpdateDraft"),
        ("GET", "/api/jobs/job_x/preview", None, "PreviewJob"),
        ("POST", "/api/jobs/job_x/cancel", {"reason": "spite"}, "CancelJob"),
        ("GET", "/api/jobs/job_x/transitions", None, "ListJobTransitions"),
    ],
)
async def test_another_company_cannot_touch_a_job(
    client: httpx.AsyncClient, backends: Backends, method: str, url: str, payload: Any, rpc: str
) -> None:
    # The fake answers GetJob with company A's job whoever asks: the gateway must still refuse.
    backends.jobs.on("GetJob", owned_by_a(jobs_pb.Job.DRAFT))
    resp = await client.request(method, url, json=payload, headers=B)
    assert resp.status_code == 404
    assert resp.json()["error"] == "NOT_FOUND"
    assert backends.jobs.calls_to(rpc) == []


async def test_another_company_cannot_read_a_draft_but_admin_can(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.jobs.on("GetJob", owned_by_a(jobs_pb.Job.PENDING_PAYMENT))
    assert (await client.get("/api/jobs/job_x", headers=B)).status_code == 404
    assert (await client.get("/api/jobs/job_x")).status_code == 404
    owner = await client.get("/api/jobs/job_x", headers=A)
    assert owner.status_code == 200
    assert owner.json()["payment_id"] == "pay_123"
    admin = await client.get("/api/jobs/job_x", headers=ADMIN)
    assert admin.status_code == 200
    assert admin.json()["status"] == "pending_payment"


async def test_active_job_is_public_without_its_payment(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.jobs.on("GetJob", owned_by_a(jobs_pb.Job.ACTIVE))
    for who in ({}, B):
        resp = await client.get("/api/jobs/job_x", headers=who)
        assert resp.status_code == 200
        data = resp.json()
        assert data["status"] == "active"
        assert data["payment_id"] is None
        assert data["payment_amount"] is None
    assert backends.jobs.calls_to("GetJob")[0].request.actor.user_id == ""


async def test_backend_not_found_or_denied_is_404(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.jobs.on("GetJob", domain_error("JOB_NOT_FOUND", ErrorKind.NOT_FOUND))
    assert (await client.get("/api/jobs/job_nope", headers=A)).status_code == 404
    backends.jobs.on("GetJob", domain_error("PERMISSION_DENIED", ErrorKind.PERMISSION_DENIED))
    assert (await client.get("/api/jobs/job_nope", headers=A)).status_code == 404


async def test_public_list_is_active_only_and_paginated(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.jobs.on(
        "ListActiveJobs",
        jobs_pb.ListJobsResponse(
            jobs=[
                make_job("job_1", "company-a", jobs_pb.Job.ACTIVE),
                make_job("job_2", "company-b", jobs_pb.Job.DRAFT),
            ],
            next_page_token="tok_2",
        ),
    )
    resp = await client.get(
        "/api/jobs", params={"page_size": 1, "page_token": "tok_1", "category": "design"}
    )
    assert resp.status_code == 200
    data = resp.json()
    assert [j["id"] for j in data["jobs"]] == ["job_1"]
    assert data["jobs"][0]["payment_id"] is None
    assert data["next_page_token"] == "tok_2"
    [call] = backends.jobs.calls_to("ListActiveJobs")
    assert call.request.page == common_pb2.PageRequest(page_size=1, page_token="tok_1")
    assert call.request.category == "design"


@pytest.mark.parametrize("size", ["0", "201", "ten"])
async def test_bad_page_size_is_400(client: httpx.AsyncClient, size: str) -> None:
    resp = await client.get("/api/jobs", params={"page_size": size})
    assert resp.status_code == 400
    assert "page_size" in resp.json()["fields"]


async def test_mine_lists_own_jobs_with_payment_fields(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.jobs.on(
        "ListMyJobs",
        lambda r: jobs_pb.ListJobsResponse(
            jobs=[
                make_job("job_m1", r.actor.user_id, jobs_pb.Job.ACTIVE),
                make_job("job_other", "someone-else", jobs_pb.Job.ACTIVE),
            ]
        ),
    )
    resp = await client.get("/api/jobs/mine", headers=A)
    assert resp.status_code == 200
    jobs = resp.json()["jobs"]
    assert [j["id"] for j in jobs] == ["job_m1"]
    assert jobs[0]["payment_amount"] == {"amount_minor": 4900, "currency": "USD"}


async def test_preview_shows_fee_and_terms(client: httpx.AsyncClient, backends: Backends) -> None:
    backends.jobs.on("GetJob", owned_by_a(jobs_pb.Job.DRAFT))
    backends.jobs.on(
        "PreviewJob",
        lambda r: jobs_pb.PreviewJobResponse(
            job=make_job(r.job_id, "company-a", jobs_pb.Job.DRAFT),
            fee=common_pb2.Money(amount_minor=4900, currency="USD"),
            fee_credits=500,
            terms_version="2026-01",
            posting_days=30,
        ),
    )
    resp = await client.get("/api/jobs/job_d/preview", headers=A)
    assert resp.status_code == 200
    data = resp.json()
    assert data["fee"] == {"amount_minor": 4900, "currency": "USD"}
    assert (data["fee_credits"], data["terms_version"], data["posting_days"]) == (
        500,
        "2026-01",
        30,
    )
    assert data["job"]["status"] == "draft"


async def test_cancel_and_transitions_for_the_owner(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.jobs.on("GetJob", owned_by_a(jobs_pb.Job.ACTIVE))
    backends.jobs.on(
        "CancelJob",
        lambda r: jobs_pb.JobResponse(job=make_job(r.job_id, "company-a", jobs_pb.Job.CANCELLED)),
    )
    backends.jobs.on(
        "ListJobTransitions",
        jobs_pb.ListJobTransitionsResponse(
            transitions=[
                jobs_pb.JobTransition(
                    from_status=jobs_pb.Job.DRAFT,
                    to_status=jobs_pb.Job.PENDING_PAYMENT,
                    actor="company-a",
                    reason="payment started",
                    at=ts(1_790_000_000),
                )
            ]
        ),
    )
    resp = await client.post(
        "/api/jobs/job_c/cancel", json={"reason": "position filled elsewhere"}, headers=A
    )
    assert resp.status_code == 200
    assert resp.json()["status"] == "cancelled"
    assert backends.jobs.calls_to("CancelJob")[0].request.reason == "position filled elsewhere"
    no_body = await client.post("/api/jobs/job_c/cancel", headers=A)
    assert no_body.status_code == 200
    resp = await client.get("/api/jobs/job_c/transitions", headers=A)
    assert resp.json() == {
        "transitions": [
            {
                "from_status": "draft",
                "to_status": "pending_payment",
                "actor": "company-a",
                "reason": "payment started",
                "at": "2026-09-21T14:13:20Z",
            }
        ]
    }


async def test_invalid_transition_is_409(client: httpx.AsyncClient, backends: Backends) -> None:
    backends.jobs.on("GetJob", owned_by_a(jobs_pb.Job.EXPIRED))
    backends.jobs.on("CancelJob", domain_error("INVALID_TRANSITION", ErrorKind.FAILED_PRECONDITION))
    resp = await client.post("/api/jobs/job_e/cancel", headers=A)
    assert resp.status_code == 409
    assert resp.json()["error"] == "INVALID_TRANSITION"
