"""Bad input is a 400, never a 500, and the web-security rules of the edge (issue 12): NUL and lone
surrogates anywhere, integers past int64, JWT claims of the wrong type or lifetime, deep JSON,
`$`-anchored validators, invisible text, open redirects, metric label cardinality, security headers.
Each class is refused before any backend is called."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest

from hirepay.jobs.v1 import jobs_service_pb2 as jobs_pb
from hirepay.payments.v1 import payments_service_pb2 as pay_pb
from hirepay_dev.procs import Process
from tests.support.gateway_fakes import make_job
from tests.support.gateway_harness import (
    AUDIENCE,
    ISSUER,
    KEYS,
    Backends,
    Gateway,
    bearer,
    start_gateway,
    token,
)

A = bearer("company", "company-a")
DRAFT = {
    "title": "Data Engineer",
    "description": "Pipelines, warehouses and a lot of SQL every day.",
    "location": "Berlin",
    "employment_type": "contract",
    "category": "engineering",
}
SUBSCRIBE = {
    "userType": "COMPANY",
    "userId": "company-a",
    "email": "company@example.com",
    "plan": "MONTHLY",
    "returnUrl": "https://app.devision.com/ok",
    "cancelUrl": "https://app.devision.com/cancel",
}
JOB_CALLS = ("GetJob", "CreateDraft", "UpdateDraft", "ListActiveJobs", "CancelJob")
PAYMENT_CALLS = ("GetTransaction", "Subscribe", "CancelCheckout", "HandleProviderEvent")


def no_backend_calls(backends: Backends) -> bool:
    return not any(backends.jobs.calls_to(m) for m in JOB_CALLS) and not any(
        backends.payments.calls_to(m) for m in PAYMENT_CALLS
    )


def assert_validation_failed(resp: httpx.Response) -> dict[str, str]:
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["error"] == "VALIDATION_FAILED", body
    return body["fields"]


# --- 1. NUL and lone surrogates anywhere ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "auth"),
    [
        ("/api/jobs/%00", False),
        ("/api/jobs/job%00_1/preview", True),
        ("/api/jobs?category=%00", False),
        ("/api/jobs?page_token=abc%00", False),
        ("/api/jobs?x%00=1", False),
        ("/api/payments/checkout/cancel?ref=txn_%00", False),
        ("/api/payments/verify/%00", True),
        ("/healthz?probe=%00", False),
    ],
)
async def test_nul_in_path_or_query_is_400(
    client: httpx.AsyncClient, backends: Backends, path: str, auth: bool
) -> None:
    resp = await client.get(path, headers=A if auth else None)
    assert_validation_failed(resp)
    assert no_backend_calls(backends)


JSON_CASES = [
    ("POST", "/api/jobs/drafts", {**DRAFT, "title": "Data\x00Engineer"}, "title"),
    ("POST", "/api/jobs/drafts", {**DRAFT, "description": "x" * 30 + "\x00"}, "description"),
    ("POST", "/api/jobs/drafts", {**DRAFT, "location": "\x00"}, "location"),
    ("PATCH", "/api/jobs/drafts/job_1", {"title": "ab\ud800c"}, "title"),
    ("POST", "/api/jobs/job_1/cancel", {"reason": "no\x00longer"}, "reason"),
    ("POST", "/api/payments/subscribe", {**SUBSCRIBE, "email": "a\x00@b.io"}, "email"),
    ("POST", "/api/payments/subscribe", {**SUBSCRIBE, "plan\x00": "x"}, "plan"),
]


@pytest.mark.parametrize(("method", "path", "payload", "field"), JSON_CASES)
async def test_nul_or_lone_surrogate_in_a_json_body_is_400(
    client: httpx.AsyncClient,
    backends: Backends,
    method: str,
    path: str,
    payload: dict[str, Any],
    field: str,
) -> None:
    # json.dumps escapes both (\u0000, \ud800), exactly what a client would send.
    raw = json.dumps(payload).encode()
    headers = {**A, "Content-Type": "application/json"}
    resp = await client.request(method, path, content=raw, headers=headers)
    assert field in assert_validation_failed(resp)
    assert no_backend_calls(backends)


async def test_nul_in_a_header_is_400(gateway: Gateway, backends: Backends) -> None:
    url = urlsplit(gateway.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(
        b"GET /api/jobs HTTP/1.1\r\nHost: x\r\nX-Note: a\x00b\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    assert answer.split(b"\r\n", 1)[0].split(b" ")[1] == b"400"
    assert no_backend_calls(backends)


async def _answers(gateway: Gateway, chunks: list[bytes], count: int) -> list[bytes]:
    """Send `chunks` on one connection (a pause after each, so each arrives on its own) and read
    `count` answers, each whole (its Content-Length)."""
    url = urlsplit(gateway.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.05)
        answers = []
        for _ in range(count):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            answers.append(head + await reader.readexactly(length))
        return answers
    finally:
        writer.close()


async def test_a_method_httptools_refuses_still_gets_the_error_contract_midway(
    gateway: Gateway,
) -> None:
    # httptools refuses a method it does not know; the connection then goes on behind h11, which
    # hands it to the edge (PAY-11 JSON, security headers), also after an earlier request and when
    # the request line comes in two pieces, and keeps serving the connection (issue 13).
    health = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    answers = await _answers(
        gateway, [health, b"XAB", b"C1 /api/jobs HTTP/1.1\r\nHost: x\r\n\r\n", health], 3
    )
    assert [a.split(b" ", 2)[1] for a in answers] == [b"200", b"405", b"200"]
    refused = answers[1]
    assert b"x-content-type-options: nosniff" in refused.lower()
    assert json.loads(refused.split(b"\r\n\r\n", 1)[1])["error"] == "METHOD_NOT_ALLOWED"


# --- integers past int64, invisible text, `$` anchors ------------------------------------------


@pytest.mark.parametrize("value", [10**20, 2**63, 2**64 + 5, -1])
async def test_integers_out_of_range_are_400_on_create_and_patch(
    client: httpx.AsyncClient, backends: Backends, value: int
) -> None:
    salary = {"min_minor": value, "max_minor": 100, "currency": "USD"}
    created = await client.post(
        "/api/jobs/drafts", json={**DRAFT, "salary_range": salary}, headers=A
    )
    assert "salary_range.min_minor" in assert_validation_failed(created)
    patched = await client.patch(
        "/api/jobs/drafts/job_1", json={"salary_range": {"max_minor": value}}, headers=A
    )
    assert "salary_range.max_minor" in assert_validation_failed(patched)
    assert no_backend_calls(backends)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", "\u200b\u200b\u200b"),
        ("title", "\u200b\u200d\ufeff\u2060"),
        ("location", "\u200b"),
        ("description", "\u200b" * 40),
        ("category", " \u200e "),
    ],
)
async def test_text_of_only_invisible_characters_is_400(
    client: httpx.AsyncClient, backends: Backends, field: str, value: str
) -> None:
    resp = await client.post("/api/jobs/drafts", json={**DRAFT, field: value}, headers=A)
    assert field in assert_validation_failed(resp)
    assert no_backend_calls(backends)


async def test_a_trailing_newline_never_passes_a_validator(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    body = {
        "job": DRAFT,
        "payment": {"method": "card", "payment_method": "pm_card_visa\n"},
        "accept_terms": True,
    }
    headers = {**bearer("company", "company-newline"), "Idempotency-Key": "k-newline"}
    resp = await client.post("/api/jobs/create-with-payment", json=body, headers=headers)
    assert resp.status_code == 400 and resp.json()["error"] == "INVALID_PAYMENT_DETAILS"
    sub = await client.post(
        "/api/payments/subscribe", json={**SUBSCRIBE, "email": "a@b.io\n"}, headers=A
    )
    assert "email" in assert_validation_failed(sub)
    salary = {"min_minor": 1, "currency": "USD\n"}
    draft = await client.post("/api/jobs/drafts", json={**DRAFT, "salary_range": salary}, headers=A)
    assert "salary_range.currency" in assert_validation_failed(draft)
    listed = await client.get("/api/jobs", params={"page_token": "abc\n"})
    assert "page_token" in assert_validation_failed(listed)
    assert backends.jobs.calls_to("CreateJobWithPayment") == []
    assert no_backend_calls(backends)


async def test_an_empty_patch_is_400(client: httpx.AsyncClient, backends: Backends) -> None:
    assert "body" in assert_validation_failed(
        await client.patch("/api/jobs/drafts/job_1", json={}, headers=A)
    )
    assert no_backend_calls(backends)


# --- deep JSON and body size --------------------------------------------------------------------


@pytest.mark.parametrize("depth", [65, 5_000])
async def test_deeply_nested_json_is_400_everywhere(
    client: httpx.AsyncClient, backends: Backends, depth: int
) -> None:
    deep = b'{"data":' * depth + b"{}" + b"}" * depth
    webhook = await client.post(
        "/api/payments/webhook/stripe",
        content=deep,
        headers={"Stripe-Signature": "t=1,v1=00", "Content-Type": "application/json"},
    )
    assert assert_validation_failed(webhook) == {"body": "nested deeper than 64 levels"}
    draft = await client.post(
        "/api/jobs/drafts",
        content=b'{"title": ' + b"[" * depth + b"]" * depth + b"}",
        headers={**A, "Content-Type": "application/json"},
    )
    assert_validation_failed(draft)
    assert no_backend_calls(backends)


async def test_a_body_above_the_limit_is_413_on_every_route(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    big = json.dumps({**DRAFT, "description": "x" * 1_100_000}).encode()
    resp = await client.post(
        "/api/jobs/drafts", content=big, headers={**A, "Content-Type": "application/json"}
    )
    assert resp.status_code == 413 and resp.json()["error"] == "PAYLOAD_TOO_LARGE"
    assert no_backend_calls(backends)


# --- JWT: claim types and lifetime --------------------------------------------------------------


def signed(**overrides: Any) -> str:
    now = int(time.time())
    claims = {"sub": "company-a", "role": "company", "iss": ISSUER, "aud": AUDIENCE}
    claims |= {"iat": now, "exp": now + 600, **overrides}
    return jwt.encode(claims, KEYS["k1"], algorithm="HS256", headers={"kid": "k1"})


@pytest.mark.parametrize(
    "claims",
    [
        {"role": ["admin"]},
        {"role": {"admin": True}},
        {"role": None},
        {"sub": ["company-a"]},
        {"sub": "a\x00b"},
        {"email": {"x": 1}},
    ],
)
@pytest.mark.parametrize("path", ["/api/jobs", "/api/jobs/mine"])
async def test_signed_token_with_claims_of_the_wrong_type_is_401(
    client: httpx.AsyncClient, backends: Backends, claims: dict[str, Any], path: str
) -> None:
    resp = await client.get(path, headers={"Authorization": f"Bearer {signed(**claims)}"})
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"] == "UNAUTHENTICATED"
    assert no_backend_calls(backends)


async def test_a_token_living_longer_than_allowed_is_401(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    now = int(time.time())
    too_long = signed(iat=now, exp=now + 2 * 86_400)
    resp = await client.get("/api/jobs/mine", headers={"Authorization": f"Bearer {too_long}"})
    assert resp.status_code == 401 and "lifetime" in resp.json()["message"]
    no_iat = signed(iat=None, exp=now + 2 * 86_400)
    resp = await client.get("/api/jobs/mine", headers={"Authorization": f"Bearer {no_iat}"})
    assert resp.status_code == 401
    # A token within the limit is still fine.
    ok = await client.get("/api/jobs", headers={"Authorization": f"Bearer {token('company', 'c')}"})
    assert ok.status_code == 200


# --- 2. Open redirect ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/phish",
        "https://app.devision.com.evil.example/x",
        "https://user@evil.example/",
        "http://app.devision.com/cancel",  # other scheme = other origin
        "https://app.devision.com:8443/cancel",
    ],
)
async def test_redirect_urls_must_be_on_an_allowed_origin(
    client: httpx.AsyncClient, backends: Backends, url: str
) -> None:
    sub = await client.post(
        "/api/payments/subscribe", json={**SUBSCRIBE, "cancelUrl": url}, headers=A
    )
    assert set(assert_validation_failed(sub)) == {"cancelUrl"}
    body = {
        "job": DRAFT,
        "payment": {"method": "checkout", "return_url": url},
        "accept_terms": True,
    }
    headers = {**bearer("company", "company-redirect"), "Idempotency-Key": "k-redirect"}
    posted = await client.post("/api/jobs/create-with-payment", json=body, headers=headers)
    assert set(assert_validation_failed(posted)) == {"payment.return_url"}
    assert backends.jobs.calls_to("CreateJobWithPayment") == []
    assert no_backend_calls(backends)


async def test_a_stored_redirect_off_the_allowed_origins_is_never_followed(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    # Defence in depth: a cancel URL stored before the origin rule (or by another client of the
    # payments service) is not followed either.
    backends.payments.on(
        "CancelCheckout",
        pay_pb.CancelCheckoutResponse(redirect_url="https://evil.example/phish"),
    )
    resp = await client.post("/api/payments/checkout/cancel", data={"ref": "txn_abc"})
    assert resp.status_code == 200 and "location" not in resp.headers
    assert resp.json()["cancelled"] is True


async def test_the_cancel_link_changes_nothing_on_a_bare_get(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    for _ in range(3):
        page = await client.get("/api/payments/checkout/cancel", params={"ref": "txn_abc"})
        assert page.status_code == 200 and "location" not in page.headers
    assert backends.payments.calls_to("CancelCheckout") == []


# --- metrics cardinality, security headers --------------------------------------------------------


async def test_unknown_http_methods_are_one_metric_label(client: httpx.AsyncClient) -> None:
    for i in range(20):
        await client.request(f"XABC{i}", "/api/jobs")
    metrics = (await client.get("/metrics")).text
    assert "XABC" not in metrics
    assert 'method="OTHER",route="/api/jobs"' in metrics


def assert_security_headers(resp: httpx.Response) -> None:
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["x-frame-options"] == "DENY"
    assert resp.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]


async def test_security_headers_on_every_answer(
    client: httpx.AsyncClient, backends: Backends
) -> None:
    backends.jobs.on("ListActiveJobs", jobs_pb.ListJobsResponse())
    answers = [
        await client.get("/api/jobs"),
        await client.get("/api/jobs/mine"),  # 401
        await client.get("/nowhere"),  # 404
        await client.get("/api/jobs/%00"),  # the input guard's 400
        await client.get("/healthz"),
        await client.get("/openapi.json"),
        await client.get("/api/payments/checkout/cancel", params={"ref": "txn_abc"}),  # HTML
    ]
    for resp in answers:
        assert_security_headers(resp)
        # Plain HTTP here: HSTS only behind TLS (see the development gateway below).
        assert "strict-transport-security" not in resp.headers
    page_csp = answers[-1].headers["content-security-policy"]
    assert "default-src 'none'" in page_csp and "form-action 'self'" in page_csp


async def test_docs_are_off_in_production(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs")).status_code == 404
    assert (await client.get("/redoc")).status_code == 404
    assert (await client.get("/openapi.json")).status_code == 200


@pytest.fixture(scope="module")
def dev_gateway(backends: Backends) -> Iterator[str]:
    """A development gateway behind TLS (the proxy terminates it): docs on, HSTS sent."""
    process: Process
    process, url = start_gateway(
        "gateway-dev-tls",
        {
            "GATEWAY_ENV": "development",
            "GATEWAY_BEHIND_TLS": "true",
            "GATEWAY_JOBS_TARGET": backends.jobs_server.target,
            "GATEWAY_PAYMENTS_TARGET": backends.payments_server.target,
            "GATEWAY_WALLET_TARGET": backends.wallet_server.target,
        },
    )
    yield url
    process.stop()


async def test_docs_pages_have_a_csp_and_hsts_behind_tls(dev_gateway: str) -> None:
    async with httpx.AsyncClient(base_url=dev_gateway, timeout=15) as http:
        for path in ("/docs", "/redoc"):
            page = await http.get(path)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert_security_headers(page)
            assert "script-src" in page.headers["content-security-policy"]
            assert page.headers["strict-transport-security"].startswith("max-age=")
        health = await http.get("/healthz")
        assert health.headers["strict-transport-security"].startswith("max-age=")


# --- the schema states the real constraints -------------------------------------------------------


async def test_openapi_states_the_real_constraints(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    parts = schema["components"]["schemas"]
    fields = parts["JobFieldsIn"]["properties"]
    assert fields["title"]["anyOf"][0]["minLength"] == 3
    assert fields["description"]["anyOf"][0]["minLength"] == 20
    assert parts["JobPatchIn"]["minProperties"] == 1
    assert parts["SubscribeIn"]["properties"]["returnUrl"]["format"] == "uri"
    salary = parts["SalaryRange"]["properties"]["min_minor"]["anyOf"][0]
    assert salary["maximum"] <= 2**63 - 1
    listing = schema["paths"]["/api/jobs"]["get"]
    token_param = next(p for p in listing["parameters"] if p["name"] == "page_token")
    assert "pattern" in json.dumps(token_param["schema"])
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            answers = operation["responses"]
            assert "400" in answers, (method, path)
            assert "422" not in answers or "HTTPValidationError" not in json.dumps(answers)
            if operation.get("security"):
                assert "401" in answers, (method, path)
            if "requestBody" in operation:
                assert "413" in answers, (method, path)
    # No integer anywhere in a request schema is unbounded (protobuf int64 / bigint).
    for name, part in parts.items():
        for integer in _integers(part):
            if name.endswith("In") or name == "SalaryRange":
                assert integer.get("maximum", 2**64) <= 2**63 - 1, name


def _integers(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") == "integer":
            yield node
        for value in node.values():
            yield from _integers(value)
    elif isinstance(node, list):
        for value in node:
            yield from _integers(value)


async def test_valid_input_still_passes(client: httpx.AsyncClient, backends: Backends) -> None:
    backends.jobs.on(
        "CreateDraft",
        lambda r: jobs_pb.JobResponse(job=make_job("job_ok", r.actor.user_id, jobs_pb.Job.DRAFT)),
    )
    resp = await client.post(
        "/api/jobs/drafts",
        json={**DRAFT, "title": "Café Barista ☕", "salary_range": {"min_minor": 10**15}},
        headers=A,
    )
    assert resp.status_code == 201, resp.text
