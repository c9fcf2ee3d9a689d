"""Operations at the edge: one trace from HTTP through gRPC, metrics, health/readiness, OpenAPI,
the error shape of framework errors, and logs without secrets."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from hirepay.jobs.v1 import jobs_service_pb2 as jobs_pb
from tests.support.gateway_fakes import FakeJobs, make_job, start_jobs
from tests.support.gateway_harness import Backends, Gateway, bearer, start_gateway


def traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


async def spans_of(gateway: Gateway, trace_id: str) -> list[dict[str, Any]]:
    """The trace's spans once its SERVER span is written: the edge's span ends after the
    response is sent (its gRPC CLIENT span may be on disk before it), so wait for it."""
    found: list[dict[str, Any]] = []
    for _ in range(100):
        found = [s for s in gateway.spans() if s["trace_id"] == trace_id]
        if any(s["kind"] == "SERVER" for s in found):
            return found
        await asyncio.sleep(0.05)
    return found


async def test_one_trace_from_the_http_edge_to_the_grpc_backend(
    client: httpx.AsyncClient, backends: Backends, gateway: Gateway
) -> None:
    backends.jobs.on(
        "CreateJobWithPayment",
        lambda r: jobs_pb.CreateJobWithPaymentResponse(
            job=make_job("job_t", r.actor.user_id), payment_id="pay_123", payment_state="CAPTURED"
        ),
    )
    header, trace_id, parent_span = traceparent()
    resp = await client.post(
        "/api/jobs/create-with-payment",
        json={"draft_id": "job_d", "payment": {"method": "credits"}, "accept_terms": True},
        headers={
            **bearer("company", "company-trace"),
            "Idempotency-Key": "t-1",
            "traceparent": header,
        },
    )
    assert resp.status_code == 201, resp.text
    assert resp.headers["X-Trace-Id"] == trace_id

    [call] = backends.jobs.calls_to("CreateJobWithPayment")
    match = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]", call.metadata["traceparent"])
    assert match, call.metadata
    assert match.group(1) == trace_id  # the same trace reached the backend

    spans = await spans_of(gateway, trace_id)
    # One SERVER span per request (the OpenTelemetry FastAPI instrumentation's, no second one).
    [server_span] = [s for s in spans if s["kind"] == "SERVER"]
    assert server_span["service"] == "gateway"
    assert server_span["name"] == "POST /api/jobs/create-with-payment"
    assert server_span["parent_span_id"] == parent_span  # continues the caller's trace
    assert server_span["attributes"]["http.route"] == "/api/jobs/create-with-payment"
    status = server_span["attributes"]
    assert "201" in (status.get("http.response.status_code"), status.get("http.status_code"))
    # The gRPC hop: a CLIENT span (the OpenTelemetry gRPC client interceptor's) child of the
    # HTTP span, whose id is the parent the backend received.
    create = "/hirepay.jobs.v1.JobsService/CreateJobWithPayment"
    [client_span] = [s for s in spans if s["kind"] == "CLIENT" and s["name"] == create]
    assert client_span["parent_span_id"] == server_span["span_id"]
    assert match.group(2) == client_span["span_id"]


async def test_a_request_without_traceparent_starts_a_new_trace(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    first = await client.get("/api/jobs/job_1")
    second = await client.get("/api/jobs/job_1")
    assert first.status_code == 200
    ids = {first.headers["X-Trace-Id"], second.headers["X-Trace-Id"]}
    assert len(ids) == 2
    sent = [c.metadata["traceparent"].split("-")[1] for c in backends.jobs.calls_to("GetJob")]
    assert set(sent) == ids


async def test_metrics_expose_http_and_funnel_counters(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    await client.get("/api/jobs/job_metrics")
    await client.post(
        "/api/jobs/drafts", json={"title": "Metrics"}, headers=bearer("company", "c-m")
    )
    resp = await client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert (
        'hirepay_http_requests_total{method="GET",route="/api/jobs/{job_id}",status="200"}' in text
    )
    assert "hirepay_http_request_duration_seconds_bucket" in text
    assert 'hirepay_gateway_funnel_total{step="draft_saved"}' in text
    assert "hirepay_gateway_create_with_payment_started_total" in text
    assert "hirepay_gateway_create_with_payment_failed_total" in text
    assert 'hirepay_rpc_client_requests_total{code="OK",method="GetJob",target="jobs"}' in text
    assert "job_metrics" not in text  # route templates, never raw paths (bounded cardinality)


async def test_healthz_and_readyz(client: httpx.AsyncClient, backends: Backends) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "backends": {"jobs": "SERVING", "payments": "SERVING", "wallet": "SERVING"},
    }
    await backends.payments_server.set_serving(False)
    try:
        down = await client.get("/readyz")
        assert down.status_code == 503
        assert down.json()["error"] == "SERVICE_UNAVAILABLE"
        assert down.json()["down"] == ["payments"]
        assert down.json()["backends"]["payments"] == "NOT_SERVING"
        assert (await client.get("/healthz")).status_code == 200  # alive, just not ready
    finally:
        await backends.payments_server.set_serving(True)
    assert (await client.get("/readyz")).status_code == 200


async def test_openapi_documents_routes_errors_and_security(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    for path in (
        "/api/payments/subscribe",
        "/api/payments/verify/{transaction_id}",
        "/api/payments/webhook/stripe",
        "/api/payments/checkout/cancel",
        "/api/jobs/drafts",
        "/api/jobs/drafts/{job_id}",
        "/api/jobs",
        "/api/jobs/mine",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/preview",
        "/api/jobs/{job_id}/cancel",
        "/api/jobs/{job_id}/transitions",
        "/api/jobs/create-with-payment",
        "/healthz",
        "/readyz",
    ):
        assert path in paths, path
    cwp = paths["/api/jobs/create-with-payment"]["post"]
    for status in ("201", "202", "400", "401", "402", "403", "409", "422", "429", "502", "504"):
        assert status in cwp["responses"], status
    assert cwp["responses"]["402"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert "HTTPValidationError" not in str(spec)
    schemas = spec["components"]["schemas"]
    assert {"error", "message", "code", "fields", "transactionId", "retry", "expiresAt"} <= set(
        schemas["ErrorBody"]["properties"]
    )
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    params = {p["name"] for p in cwp["parameters"]}
    assert "Idempotency-Key" in params
    webhook = paths["/api/payments/webhook/stripe"]["post"]
    assert webhook["parameters"][0]["name"] == "Stripe-Signature"
    assert "security" not in webhook  # the signature is the auth
    assert "requestBody" in webhook


async def test_api_responses_are_never_cached(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/jobs")
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "Cache-Control" not in (await client.get("/healthz")).headers


async def test_framework_errors_use_the_error_shape(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/nothing-here")
    assert missing.status_code == 404
    assert missing.json() == {"error": "NOT_FOUND", "message": "The resource was not found"}
    wrong = await client.delete("/api/jobs")
    assert wrong.status_code == 405
    assert wrong.json()["error"] == "METHOD_NOT_ALLOWED"


async def test_unreachable_backend_is_503_without_internals(
    client: httpx.AsyncClient, backends: Backends, gateway: Gateway
) -> None:
    await backends.jobs_server.server.stop(0)
    try:
        resp = await client.get("/api/jobs")
        assert resp.status_code == 503
        data = resp.json()
        assert data["error"] == "SERVICE_UNAVAILABLE"
        assert "127.0.0.1" not in resp.text and "ipv4" not in resp.text
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["down"] == ["jobs"]
    finally:
        # Bring a fresh jobs fake back on the same port for the tests that follow.
        backends.jobs_server = await start_jobs(backends.jobs, backends.jobs_server.port)
    for _ in range(50):
        if (await client.get("/readyz")).status_code == 200:
            break
        await asyncio.sleep(0.1)
    assert (await client.get("/api/jobs")).status_code == 200


async def test_logs_carry_trace_ids_but_no_tokens_or_card_numbers(
    client: httpx.AsyncClient, gateway: Gateway
) -> None:
    auth = bearer("company", "company-logs")
    header, trace_id, _ = traceparent()
    await client.post(
        "/api/jobs/create-with-payment",
        json={
            "job": {"title": "x"},
            "payment": {"method": "card", "payment_method": "4242424242424242"},
        },
        headers={**auth, "Idempotency-Key": "log-1", "traceparent": header},
    )
    await client.get("/api/jobs/mine", headers={"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."})
    # A last request marks the end: once its trace id is logged, the lines before it are too.
    marker, marker_trace_id, _ = traceparent()
    await client.get("/api/jobs/mine", headers={**auth, "traceparent": marker})
    for _ in range(100):
        logs = gateway.log_text()
        if f'"trace_id": "{marker_trace_id}"' in logs:
            break
        await asyncio.sleep(0.05)
    assert f'"trace_id": "{marker_trace_id}"' in logs
    assert auth["Authorization"].split()[1] not in logs
    assert "4242424242424242" not in logs
    assert "eyJhbGciOiJub25lIn0" not in logs
    assert f'"trace_id": "{trace_id}"' in logs


async def test_the_consistency_report_is_for_admins(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    """OPS-3: GET /api/admin/consistency answers the auditor's report, naming offending ids."""
    backends.jobs.on(
        "GetConsistencyReport",
        jobs_pb.ConsistencyReport(
            counts={"active_job_without_payment": 1, "provider_mismatch": 0},
            violations=[
                jobs_pb.ConsistencyViolation(
                    check="active_job_without_payment", subject_id="job_1", detail="pending"
                )
            ],
        ),
    )
    report = await client.get("/api/admin/consistency", headers=bearer("admin", "ops-1"))
    assert report.status_code == 200, report.text
    assert report.json()["counts"] == {"active_job_without_payment": 1, "provider_mismatch": 0}
    assert report.json()["violations"] == [
        {"check": "active_job_without_payment", "subjectId": "job_1", "detail": "pending"}
    ]
    assert report.json()["purchaseRefunds"] is None  # the round did not reconcile
    (call,) = backends.jobs.calls_to("GetConsistencyReport")
    assert (call.request.actor.user_id, call.request.actor.role) == ("ops-1", "admin")
    company = await client.get("/api/admin/consistency", headers=bearer("company", "co-1"))
    assert company.status_code == 403
    assert (await client.get("/api/admin/consistency")).status_code == 401
    assert len(backends.jobs.calls_to("GetConsistencyReport")) == 1


async def test_the_consistency_report_shows_the_purchases_refunds_the_reconciliation_booked(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    """OPS-3: plan purchases refunded at Fatora's dashboard (no refund event) that the round's
    reconciliation found and booked are in the admin's report, with what it read."""
    backends.jobs.on(
        "GetConsistencyReport",
        jobs_pb.ConsistencyReport(
            counts={"provider_mismatch": 0},
            purchase_refunds=jobs_pb.PurchaseRefundReconciliation(
                purchases_checked=12,
                refunds_found=2,
                refunds_booked=[
                    jobs_pb.BookedPurchaseRefund(
                        transaction_id="txn_1",
                        provider="fatora",
                        amount_minor=4_900,
                        currency="USD",
                        refunded_in_full=True,
                    )
                ],
                purchases_unreadable=1,
            ),
        ),
    )
    report = await client.get("/api/admin/consistency", headers=bearer("admin", "ops-1"))
    assert report.status_code == 200, report.text
    assert report.json()["purchaseRefunds"] == {
        "purchasesChecked": 12,
        "found": 2,
        "booked": [
            {
                "transactionId": "txn_1",
                "provider": "fatora",
                "amountMinor": 4_900,
                "currency": "USD",
                "refundedInFull": True,
            }
        ],
        "purchasesUnreadable": 1,
    }


@pytest.fixture(scope="module")
async def spanless_gateway(backends: Backends) -> AsyncIterator[tuple[str, FakeJobs]]:
    """A gateway that exports no spans (as the bench runs it): it makes no SERVER span, only
    carries the W3C context (tracing.TraceContextMiddleware, issue 13). Its jobs fake is its own,
    so the calls it records are this gateway's only."""
    jobs = FakeJobs()
    jobs_server = await start_jobs(jobs)
    process, url = start_gateway(
        "gateway-tests-spanless",
        {
            "GATEWAY_JOBS_TARGET": jobs_server.target,
            "GATEWAY_PAYMENTS_TARGET": backends.payments_server.target,
            "GATEWAY_WALLET_TARGET": backends.wallet_server.target,
            "HIREPAY_TRACES": "none",
        },
    )
    yield url, jobs
    process.stop()
    await jobs_server.server.stop(0)


async def test_without_exported_spans_the_trace_still_crosses_the_edge(
    spanless_gateway: tuple[str, FakeJobs],
) -> None:
    url, jobs = spanless_gateway
    header, trace_id, parent_span = traceparent()
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        continued = await client.get("/api/jobs/job_1", headers={"traceparent": header})
        fresh = await client.get("/api/jobs/job_1")
        probe = await client.get("/healthz")
    assert continued.status_code == fresh.status_code == 200
    # The caller's trace reaches the backend (its span the parent: no edge span in between)...
    first, second = (c.metadata["traceparent"] for c in jobs.calls_to("GetJob"))
    assert continued.headers["X-Trace-Id"] == trace_id
    assert first == f"00-{trace_id}-{parent_span}-01"
    # ...and a request without one begins a new (sampled) trace, the one its answer names.
    match = re.fullmatch(r"00-([0-9a-f]{32})-[0-9a-f]{16}-01", second)
    assert match and match.group(1) == fresh.headers["X-Trace-Id"] != trace_id
    assert match.group(1) != "0" * 32
    # Probes are not traced, as the instrumentation excludes them.
    assert probe.headers["X-Trace-Id"] == "0" * 32
