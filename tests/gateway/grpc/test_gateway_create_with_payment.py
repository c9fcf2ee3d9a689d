"""POST /api/jobs/create-with-payment: request mapping, 201/202 shapes, idempotency, rate limit, and
every PAY-11 error the saga can end with."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import httpx
import pytest

from hirepay.jobs.v1 import jobs_service_pb2 as jobs_pb
from hirepay_platform.errors import ErrorKind
from tests.support.gateway_fakes import domain_error, make_job
from tests.support.gateway_harness import RATE_LIMIT, Backends, bearer

URL = "/api/jobs/create-with-payment"

JOB = {
    "title": "Senior Python Engineer",
    "description": "Build the payment backbone of a job marketplace.",
    "location": "Remote",
    "employment_type": "full_time",
    "category": "engineering",
    "salary_range": {"min_minor": 9000000, "max_minor": 12000000, "currency": "USD"},
}


def body(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "job": JOB,
        "payment": {"method": "card", "payment_method": "pm_card_visa"},
        "accept_terms": True,
        "terms_version": "2026-01",
    }
    payload.update(overrides)
    return payload


def new_user() -> str:
    """A fresh company per test, so the per-user rate limit of one test never leaks into another."""
    return f"company-{uuid.uuid4().hex[:8]}"


def headers(user: str, key: str | None = "key-1", role: str = "company") -> dict[str, str]:
    h = bearer(role, user, email=f"{user}@example.com")
    if key is not None:
        h["Idempotency-Key"] = key
    return h


def active_response(request: jobs_pb.CreateJobWithPaymentRequest, replayed: bool = False) -> Any:
    job = make_job("job_new", request.actor.user_id, jobs_pb.Job.ACTIVE)
    return jobs_pb.CreateJobWithPaymentResponse(
        job=job, payment_id="pay_123", payment_state="CAPTURED", replayed=replayed, saga_id="saga_1"
    )


async def test_active_posting_answers_201_with_job_and_payment(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    user = new_user()
    backends.jobs.on("CreateJobWithPayment", active_response)
    resp = await client.post(URL, json=body(), headers=headers(user, "order-42"))
    assert resp.status_code == 201, resp.text
    data = resp.json()
    job = data["job"]
    assert job["id"] == "job_new"
    assert job["status"] == "active"
    assert job["payment_id"] == "pay_123"
    assert job["payment_status"] == "completed"
    assert job["payment_amount"] == {"amount_minor": 4900, "currency": "USD"}
    assert job["posted_at"] == "2026-09-21T14:15:00Z"
    assert job["employment_type"] == "full_time"
    assert job["salary_range"] == {"min_minor": 9000000, "max_minor": 12000000, "currency": "USD"}
    assert job["terms_version"] == "2026-01"
    assert data["payment"] == {
        "id": "pay_123",
        "status": "captured",
        "amount": {"amount_minor": 4900, "currency": "USD"},
        "method": "card",
    }
    assert "next_action" not in data or data["next_action"] is None
    assert "Idempotent-Replayed" not in resp.headers
    assert resp.headers["RateLimit-Policy"] == f'"create-with-payment";q={RATE_LIMIT};w=60'
    assert resp.headers["RateLimit"].startswith(f'"create-with-payment";r={RATE_LIMIT - 1};t=')

    [call] = backends.jobs.calls_to("CreateJobWithPayment")
    req = call.request
    assert req.request_id == "order-42"
    assert (req.actor.user_id, req.actor.role) == (user, "company")
    assert req.email == f"{user}@example.com"
    assert req.WhichOneof("subject") == "job"
    assert req.job.title == JOB["title"]
    assert req.job.employment_type == jobs_pb.FULL_TIME
    assert (req.job.salary_min_minor, req.job.salary_currency) == (9000000, "USD")
    assert (req.payment.method, req.payment.payment_method) == ("card", "pm_card_visa")
    assert req.accept_terms is True
    assert req.terms_version == "2026-01"
    canonical = json.dumps(body(), sort_keys=True, separators=(",", ":")).encode()
    assert req.request_fingerprint == hashlib.sha256(canonical).hexdigest()


async def test_fingerprint_ignores_key_order_and_whitespace_but_not_content(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    user = new_user()
    backends.jobs.on("CreateJobWithPayment", active_response)
    compact = json.dumps(body(), separators=(",", ":"))
    reordered = json.dumps(dict(reversed(list(body().items()))), indent=4)
    other = json.dumps(body(accept_terms=True, terms_version="2026-02"))
    for raw in (compact, reordered, other):
        h = {**headers(user, "same-key"), "Content-Type": "application/json"}
        resp = await client.post(URL, content=raw, headers=h)
        assert resp.status_code == 201
    prints = [c.request.request_fingerprint for c in backends.jobs.calls_to("CreateJobWithPayment")]
    assert prints[0] == prints[1]
    assert prints[2] != prints[0]


async def test_pending_payment_answers_202_with_next_action(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    user = new_user()

    def pending(request: jobs_pb.CreateJobWithPaymentRequest) -> Any:
        job = make_job("job_p", request.actor.user_id, jobs_pb.Job.PENDING_PAYMENT)
        job.payment_method = "bank_transfer"
        return jobs_pb.CreateJobWithPaymentResponse(
            job=job,
            payment_id="pay_123",
            payment_state="PROCESSING",
            next_action_url="https://sandbox.test/pay/pi_1",
        )

    backends.jobs.on("CreateJobWithPayment", pending)
    payload = body(
        draft_id="job_draft_7",
        job=None,
        payment={"method": "bank_transfer", "payment_method": "pm_bank_transfer"},
    )
    del payload["job"]
    resp = await client.post(URL, json=payload, headers=headers(user))
    assert resp.status_code == 202, resp.text
    data = resp.json()
    assert data["job"]["status"] == "pending_payment"
    assert data["job"]["payment_status"] == "pending"
    assert data["job"]["posted_at"] is None
    assert data["payment"]["status"] == "processing"
    assert data["payment"]["method"] == "bank_transfer"
    assert data["next_action"] == {
        "type": "redirect_to_url",
        "url": "https://sandbox.test/pay/pi_1",
    }
    [call] = backends.jobs.calls_to("CreateJobWithPayment")
    assert call.request.WhichOneof("subject") == "draft_id"
    assert call.request.draft_id == "job_draft_7"
    assert call.request.payment.method == "bank_transfer"
    assert call.request.payment.payment_method == "pm_bank_transfer"


async def test_replayed_twin_gives_the_same_status_and_body(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    user = new_user()
    seen: set[str] = set()

    def once_then_replay(request: jobs_pb.CreateJobWithPaymentRequest) -> Any:
        replayed = request.request_id in seen
        seen.add(request.request_id)
        return active_response(request, replayed=replayed)

    backends.jobs.on("CreateJobWithPayment", once_then_replay)
    first = await client.post(URL, json=body(), headers=headers(user, "k-replay"))
    second = await client.post(URL, json=body(), headers=headers(user, "k-replay"))
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (None, "IDEMPOTENCY_KEY_REQUIRED"),
        ("", "IDEMPOTENCY_KEY_REQUIRED"),
        ("x" * 256, "VALIDATION_FAILED"),
        ("tab\tkey", "VALIDATION_FAILED"),
    ],
)
async def test_missing_or_bad_idempotency_key_is_refused_before_any_call(
    client: httpx.AsyncClient, backends: Backends, key: str | None, expected: str
) -> None:
    resp = await client.post(URL, json=body(), headers=headers(new_user(), key))
    assert resp.status_code == 400
    assert resp.json()["error"] == expected
    assert backends.jobs.calls_to("CreateJobWithPayment") == []


async def test_longest_printable_key_is_accepted(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.jobs.on("CreateJobWithPayment", active_response)
    key = "K-" + "~" * 253
    resp = await client.post(URL, json=body(), headers=headers(new_user(), key))
    assert resp.status_code == 201
    assert backends.jobs.calls_to("CreateJobWithPayment")[0].request.request_id == key


async def test_same_key_other_body_is_422(client: httpx.AsyncClient, backends: Backends) -> None:
    backends.jobs.on(
        "CreateJobWithPayment", domain_error("IDEMPOTENCY_MISMATCH", ErrorKind.ALREADY_EXISTS)
    )
    resp = await client.post(URL, json=body(), headers=headers(new_user()))
    assert resp.status_code == 422
    assert resp.json()["error"] == "IDEMPOTENCY_KEY_REUSED"


async def test_twin_in_progress_is_409(client: httpx.AsyncClient, backends: Backends) -> None:
    backends.jobs.on("CreateJobWithPayment", domain_error("REQUEST_IN_PROGRESS", ErrorKind.ABORTED))
    resp = await client.post(URL, json=body(), headers=headers(new_user()))
    assert resp.status_code == 409
    assert resp.json()["error"] == "IDEMPOTENCY_KEY_IN_USE"
    assert resp.headers["Retry-After"] == "1"


@pytest.mark.parametrize(
    "code", ["card_declined", "expired_card", "incorrect_cvc", "processing_error"]
)
async def test_declines_are_402_with_the_provider_code(
    client: httpx.AsyncClient, backends: Backends, code: str
) -> None:
    backends.jobs.on(
        "CreateJobWithPayment",
        domain_error("PAYMENT_DECLINED", ErrorKind.FAILED_PRECONDITION, code=code),
    )
    resp = await client.post(URL, json=body(), headers=headers(new_user()))
    assert resp.status_code == 402
    data = resp.json()
    assert data["error"] == "PAYMENT_DECLINED"
    assert data["code"] == code
    assert data["message"]


async def test_decline_code_is_used_when_there_is_no_code(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.jobs.on(
        "CreateJobWithPayment",
        domain_error(
            "PAYMENT_DECLINED", ErrorKind.FAILED_PRECONDITION, decline_code="generic_decline"
        ),
    )
    resp = await client.post(URL, json=body(), headers=headers(new_user()))
    assert resp.json()["code"] == "generic_decline"


@pytest.mark.parametrize(
    ("reason", "kind", "metadata", "status", "expected"),
    [
        (
            "INSUFFICIENT_FUNDS",
            ErrorKind.FAILED_PRECONDITION,
            {"code": "card_declined", "decline_code": "insufficient_funds"},
            402,
            {"error": "INSUFFICIENT_FUNDS", "code": "insufficient_funds"},
        ),
        (
            "INSUFFICIENT_CREDITS",
            ErrorKind.FAILED_PRECONDITION,
            {},
            402,
            {"error": "INSUFFICIENT_CREDITS"},
        ),
        (
            "PAYMENT_TIMEOUT",
            ErrorKind.DEADLINE_EXCEEDED,
            {"payment_id": "pay_timeout_1"},
            504,
            {"error": "PAYMENT_TIMEOUT", "transactionId": "pay_timeout_1", "retry": True},
        ),
        (
            "PAYMENT_PROVIDER_UNAVAILABLE",
            ErrorKind.UNAVAILABLE,
            {},
            502,
            {"error": "PAYMENT_PROVIDER_UNAVAILABLE"},
        ),
        (
            "INVALID_PAYMENT_DETAILS",
            ErrorKind.INVALID_ARGUMENT,
            {"code": "invalid_payment_method"},
            400,
            {"error": "INVALID_PAYMENT_DETAILS", "code": "invalid_payment_method"},
        ),
        (
            "VALIDATION_FAILED",
            ErrorKind.INVALID_ARGUMENT,
            {"title": "must be 3-200 characters", "description": "must be at least 20 characters"},
            400,
            {
                "error": "VALIDATION_FAILED",
                "fields": {
                    "title": "must be 3-200 characters",
                    "description": "must be at least 20 characters",
                },
            },
        ),
        (
            "TERMS_NOT_ACCEPTED",
            ErrorKind.INVALID_ARGUMENT,
            {"accept_terms": "must be true"},
            400,
            {"error": "TERMS_NOT_ACCEPTED", "fields": {"accept_terms": "must be true"}},
        ),
        ("FEE_MISMATCH", ErrorKind.INVALID_ARGUMENT, {}, 400, {"error": "FEE_MISMATCH"}),
        ("JOB_NOT_FOUND", ErrorKind.NOT_FOUND, {}, 404, {"error": "NOT_FOUND"}),
        ("PERMISSION_DENIED", ErrorKind.PERMISSION_DENIED, {}, 403, {"error": "FORBIDDEN"}),
        (
            "INVALID_TRANSITION",
            ErrorKind.FAILED_PRECONDITION,
            {},
            409,
            {"error": "INVALID_TRANSITION"},
        ),
        ("UNAVAILABLE", ErrorKind.UNAVAILABLE, {}, 503, {"error": "SERVICE_UNAVAILABLE"}),
        ("INTERNAL", ErrorKind.INTERNAL, {}, 500, {"error": "INTERNAL_ERROR"}),
    ],
)
async def test_saga_errors_follow_pay_11(
    client: httpx.AsyncClient,
    backends: Backends,
    reason: str,
    kind: ErrorKind,
    metadata: dict[str, str],
    status: int,
    expected: dict[str, Any],
) -> None:
    backends.jobs.on("CreateJobWithPayment", domain_error(reason, kind, **metadata))
    resp = await client.post(URL, json=body(), headers=headers(new_user()))
    assert resp.status_code == status, resp.text
    data = resp.json()
    assert {k: data.get(k) for k in expected} == expected
    assert isinstance(data["message"], str) and data["message"]


async def test_a_crash_behind_the_gateway_is_a_generic_500(
    client: httpx.AsyncClient, backends: Backends, gateway: Any
) -> None:
    def crash(_request: Any) -> Any:
        raise RuntimeError("boom sk_test_supersecret123 at /srv/jobs/saga.py line 12")

    backends.jobs.on("CreateJobWithPayment", crash)
    resp = await client.post(URL, json=body(), headers=headers(new_user()))
    assert resp.status_code == 500
    assert resp.json() == {"error": "INTERNAL_ERROR", "message": "Something went wrong on our side"}
    assert "sk_test_supersecret123" not in gateway.log_text()


async def test_failed_job_without_error_still_answers_pay_11(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    def failed(request: jobs_pb.CreateJobWithPaymentRequest) -> Any:
        job = make_job("job_f", request.actor.user_id, jobs_pb.Job.PAYMENT_FAILED)
        job.failure_reason = "INSUFFICIENT_FUNDS"
        return jobs_pb.CreateJobWithPaymentResponse(job=job, payment_state="FAILED", replayed=True)

    backends.jobs.on("CreateJobWithPayment", failed)
    resp = await client.post(URL, json=body(), headers=headers(new_user()))
    assert resp.status_code == 402
    assert resp.json()["error"] == "INSUFFICIENT_FUNDS"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"job": {"title": "x"', "body"),
        ("not json at all", "body"),
        (json.dumps({"job": JOB, "accept_terms": True}), "payment"),
        (json.dumps(body(payment={"method": "cash"})), "payment.method"),
        (json.dumps(body(job={**JOB, "employment_type": "forever"})), "job.employment_type"),
        (json.dumps(body(job={**JOB, "colour": "blue"})), "job.colour"),
        (
            json.dumps(
                body(
                    payment={
                        "method": "card",
                        "payment_method": "pm_card_visa",
                        "amount": {"amount_minor": -1, "currency": "USD"},
                    }
                )
            ),
            "payment.amount.amount_minor",
        ),
        (json.dumps({**body(), "draft_id": "job_1"}), "draft_id"),
        (
            json.dumps(body(payment={"method": "credits", "payment_method": "pm_card_visa"})),
            "payment.payment_method",
        ),
        (
            json.dumps(body(payment={"method": "checkout", "payment_method": "pm_card_visa"})),
            "payment.payment_method",
        ),
        (
            json.dumps(body(payment={"method": "checkout", "return_url": "data:text/html,hi"})),
            "payment.return_url",
        ),
        # The hosted page sends the customer back to return_url: without one, refused here
        # before jobs records a payment_failed draft (README "Try it" named no return_url).
        (json.dumps(body(payment={"method": "checkout"})), "payment.return_url"),
    ],
)
async def test_bad_bodies_are_400_validation_failed_with_fields(
    client: httpx.AsyncClient, backends: Backends, raw: str, field: str
) -> None:
    h = {**headers(new_user()), "Content-Type": "application/json"}
    resp = await client.post(URL, content=raw, headers=h)
    assert resp.status_code == 400, resp.text
    data = resp.json()
    assert data["error"] == "VALIDATION_FAILED"
    assert field in data["fields"], data
    assert backends.jobs.calls_to("CreateJobWithPayment") == []


@pytest.mark.parametrize(
    ("payment_method", "problem"),
    [
        (None, "required for card"),
        ("4242 4242 4242 4242", "never send a card number"),
        ("4000000000000002", "never send a card number"),
        # The format of a token is the provider adapter's business (payments refuses what its
        # provider does not know); the gateway refuses only what is no token at all.
        ("tok visa; <script>", "must be a provider payment method token"),
    ],
)
async def test_card_without_a_provider_token_is_invalid_payment_details(
    client: httpx.AsyncClient,
    backends: Backends,
    gateway: Any,
    payment_method: str | None,
    problem: str,
) -> None:
    payment: dict[str, Any] = {"method": "card"}
    if payment_method is not None:
        payment["payment_method"] = payment_method
    resp = await client.post(URL, json=body(payment=payment), headers=headers(new_user()))
    assert resp.status_code == 400
    data = resp.json()
    assert data["error"] == "INVALID_PAYMENT_DETAILS"
    assert problem in data["fields"]["payment.payment_method"]
    if payment_method:
        assert payment_method not in resp.text
        assert payment_method not in gateway.log_text()
    assert backends.jobs.calls_to("CreateJobWithPayment") == []


async def test_only_companies_and_admins_post(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.jobs.on("CreateJobWithPayment", active_response)
    for role in ("applicant", "customer", "contractor"):
        resp = await client.post(URL, json=body(), headers=headers(new_user(), role=role))
        assert resp.status_code == 403
        assert resp.json()["error"] == "FORBIDDEN"
    resp = await client.post(URL, json=body(), headers=headers("ops-admin-1", role="admin"))
    assert resp.status_code == 201
    assert backends.jobs.calls_to("CreateJobWithPayment")[0].request.actor.role == "admin"


async def test_rate_limit_per_user_with_headers_and_retry_after(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.jobs.on("CreateJobWithPayment", active_response)
    user, other = new_user(), new_user()
    for i in range(RATE_LIMIT):
        resp = await client.post(URL, json=body(), headers=headers(user, f"k{i}"))
        assert resp.status_code == 201
    # A retry of an attempt already counted (same key) is not a new attempt.
    again = await client.post(URL, json=body(), headers=headers(user, "k0"))
    assert again.status_code == 201
    limited = await client.post(URL, json=body(), headers=headers(user, "k-new"))
    assert limited.status_code == 429
    data = limited.json()
    assert data["error"] == "RATE_LIMITED"
    retry_after = int(limited.headers["Retry-After"])
    assert 1 <= retry_after <= 60 // RATE_LIMIT + 1
    assert limited.headers["RateLimit"].startswith('"create-with-payment";r=0;t=')
    assert limited.headers["RateLimit-Policy"] == f'"create-with-payment";q={RATE_LIMIT};w=60'
    assert len(backends.jobs.calls_to("CreateJobWithPayment")) == RATE_LIMIT + 1
    # One call per posting: jobs spent the attempt (the refused one reached no posting).
    assert len(backends.jobs.calls_to("CreateJobWithPayment/refused")) == 1
    assert all(
        (c.request.rate_limit.limit, c.request.rate_limit.window_seconds) == (RATE_LIMIT, 60)
        for c in backends.jobs.calls
    )
    # Another user has their own bucket.
    assert (await client.post(URL, json=body(), headers=headers(other, "k0"))).status_code == 201


async def test_rate_limit_headers_also_on_errors(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.jobs.on(
        "CreateJobWithPayment",
        domain_error("PAYMENT_DECLINED", ErrorKind.FAILED_PRECONDITION, code="card_declined"),
    )
    resp = await client.post(URL, json=body(), headers=headers(new_user()))
    assert resp.status_code == 402
    assert "RateLimit" in resp.headers


async def test_posting_blocked_answers_429_with_retry_after(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    """PAY-14: jobs blocks a company after many failed payments; the client learns when to retry."""
    backends.jobs.on(
        "CreateJobWithPayment",
        domain_error(
            "POSTING_BLOCKED",
            ErrorKind.RESOURCE_EXHAUSTED,
            failed_payments="10",
            retry_after_seconds="3600",
        ),
    )
    resp = await client.post(URL, json=body(), headers=headers(new_user()))
    assert resp.status_code == 429, resp.text
    assert resp.headers["Retry-After"] == "3600"  # the block's window, not the rate limiter's
    data = resp.json()
    assert data["error"] == "POSTING_BLOCKED" and data["retry"] is True
    assert data["message"] and "fake" not in data["message"]
    assert resp.headers["RateLimit"].startswith('"create-with-payment";')


# --- the direct answer and FastAPI's route agree (issue 13) --------------------------------------

# A posting sent as `application/json` is answered directly (entrypoints/direct_routes.py); the same
# posting sent as another JSON media type is one FastAPI parses too, but the direct answer declines
# it, so it takes FastAPI's route. Whatever the saga answers, both ways must answer alike.
DIRECT = "application/json"
THROUGH_FASTAPI = "application/vnd.hirepay+json"
# Per-request values: the trace, the remaining attempts of the user's bucket, and the date (the two
# requests may be answered on either side of a second's turn).
_PER_REQUEST = {"x-trace-id", "ratelimit", "date"}


async def _post_both_ways(
    client: httpx.AsyncClient, payload: dict[str, Any]
) -> list[httpx.Response]:
    user = new_user()
    return [
        await client.post(
            URL,
            content=json.dumps(payload),
            headers={**headers(user, f"both-{content_type}"), "Content-Type": content_type},
        )
        for content_type in (DIRECT, THROUGH_FASTAPI)
    ]


def _comparable(resp: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    kept = {k: v for k, v in resp.headers.items() if k not in _PER_REQUEST}
    return resp.status_code, resp.content, kept


@pytest.mark.parametrize(
    "answer",
    [
        active_response,
        lambda r: active_response(r, replayed=True),
        domain_error("PAYMENT_DECLINED", ErrorKind.FAILED_PRECONDITION, code="expired_card"),
        domain_error("REQUEST_IN_PROGRESS", ErrorKind.ABORTED),
        domain_error("IDEMPOTENCY_MISMATCH", ErrorKind.ALREADY_EXISTS),
    ],
)
async def test_a_posting_is_answered_alike_directly_and_through_fastapi(
    client: httpx.AsyncClient, backends: Backends, answer: Any
) -> None:
    backends.jobs.on("CreateJobWithPayment", answer)
    direct, through_fastapi = await _post_both_ways(client, body())
    assert _comparable(direct) == _comparable(through_fastapi)
    assert direct.headers["ratelimit"].startswith('"create-with-payment";r=')
    first, second = backends.jobs.calls_to("CreateJobWithPayment")
    assert first.request.request_fingerprint == second.request.request_fingerprint
    assert first.request.actor == second.request.actor


@pytest.mark.parametrize(
    "payload",
    [
        body(payment={"method": "card"}),  # the route's own check: INVALID_PAYMENT_DETAILS
        body(payment={"method": "checkout", "return_url": "https://evil.example/x"}),
        body(job=None),  # neither a draft nor a job
        body(accept_terms="yes please"),  # the model refuses it: FastAPI's answer both ways
    ],
)
async def test_a_refused_posting_is_answered_alike_directly_and_through_fastapi(
    client: httpx.AsyncClient, backends: Backends, payload: dict[str, Any]
) -> None:
    direct, through_fastapi = await _post_both_ways(client, payload)
    assert direct.status_code == 400, direct.text
    assert _comparable(direct) == _comparable(through_fastapi)
    assert backends.jobs.calls_to("CreateJobWithPayment") == []


async def test_a_posting_not_sent_as_json_is_still_refused(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
        h = headers(new_user())
        if content_type is not None:
            h["Content-Type"] = content_type
        resp = await client.post(URL, content=json.dumps(body()), headers=h)
        assert resp.status_code == 400, (content_type, resp.text)
        assert resp.json()["error"] == "VALIDATION_FAILED"
    assert backends.jobs.calls_to("CreateJobWithPayment") == []


async def test_a_direct_posting_is_counted_under_its_route(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.jobs.on("CreateJobWithPayment", active_response)
    series = 'hirepay_http_requests_total{method="POST",route="/api/jobs/create-with-payment",status="201"}'

    async def count() -> float:
        for line in (await client.get("/metrics")).text.splitlines():
            if line.startswith(series):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = await count()
    resp = await client.post(URL, json=body(), headers=headers(new_user()))
    assert resp.status_code == 201
    assert await count() == before + 1
