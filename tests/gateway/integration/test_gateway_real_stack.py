"""The gateway against the real services (every process real: PostgreSQL, sandbox, wallet, payments,
jobs, gateway): the PAY-11 mapping of what the services really answer, idempotent replays,
the subscription checkout through the sandbox's hosted page, and one trace across every hop."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.service_layer.auth import issue_token
from hirepay_dev.sandbox_client import SandboxAdmin
from hirepay_dev.stack import JOBS, PAYMENTS, WALLET, Ports, Stack, service_exists
from tests.support.databases import SessionDatabases

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all(service_exists(s) for s in (WALLET, PAYMENTS, JOBS)),
        reason="needs the wallet, payments and jobs services",
    ),
]

JOB = {
    "title": "Senior Python Engineer",
    "description": "Build the payment backbone of a job marketplace.",
    "location": "Remote",
    "employment_type": "full_time",
    "category": "engineering",
}


class Real:
    def __init__(self, stack: Stack, spans: Path) -> None:
        self.stack = stack
        self.spans_path = spans
        self.http = httpx.Client(base_url=stack.gateway_url, timeout=30)
        self.sandbox = SandboxAdmin(stack.sandbox_url)

    def spans(self, trace_id: str) -> list[dict[str, Any]]:
        lines = self.spans_path.read_text().splitlines() if self.spans_path.exists() else []
        return [s for s in map(json.loads, lines) if s["trace_id"] == trace_id]


@pytest.fixture(scope="module")
def real(
    pg_server_url: str, tmp_path_factory: pytest.TempPathFactory, test_databases: SessionDatabases
) -> Iterator[Real]:
    spans = tmp_path_factory.mktemp("real-traces") / "spans.jsonl"
    traced = {"HIREPAY_TRACES": f"file:{spans}"}
    stack = Stack(
        server_url=pg_server_url,
        ports=Ports.free(),
        db_suffix=f"_gw{uuid.uuid4().hex[:6]}",
        fresh=True,
        extra_env={
            **{name: traced for name in ("jobs", "wallet")},
            "gateway": {**traced, "GATEWAY_ALLOWED_REDIRECT_ORIGINS": "https://app.example"},
            # A short provider deadline so the timeout scenario stays quick.
            "payments": {**traced, "PAYMENTS_PROVIDER_TIMEOUT_SECONDS": "1"},
        },
    )
    test_databases.add(*stack.database_names())
    stack.start()
    try:
        yield Real(stack, spans)
    finally:
        stack.stop()


def company() -> tuple[str, dict[str, str]]:
    user = f"company-{uuid.uuid4().hex[:8]}"
    token = issue_token(user_id=user, role="company", email=f"{user}@example.com")
    return user, {"Authorization": f"Bearer {token}"}


def post_job(
    real: Real, headers: dict[str, str], key: str, payment: dict[str, Any]
) -> httpx.Response:
    body = {"job": JOB, "payment": payment, "accept_terms": True}
    return real.http.post(
        "/api/jobs/create-with-payment", json=body, headers={**headers, "Idempotency-Key": key}
    )


def test_ready_with_every_backend(real: Real) -> None:
    resp = real.http.get("/readyz")
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    ("token", "error", "code"),
    [
        ("pm_card_chargeDeclined", "PAYMENT_DECLINED", "card_declined"),
        ("pm_card_chargeDeclinedExpiredCard", "PAYMENT_DECLINED", "expired_card"),
        ("pm_card_chargeDeclinedIncorrectCvc", "PAYMENT_DECLINED", "incorrect_cvc"),
        ("pm_card_chargeDeclinedProcessingError", "PAYMENT_DECLINED", "processing_error"),
        ("pm_card_chargeDeclinedInsufficientFunds", "INSUFFICIENT_FUNDS", "insufficient_funds"),
    ],
)
def test_real_declines_follow_pay_11(real: Real, token: str, error: str, code: str) -> None:
    _, headers = company()
    resp = post_job(real, headers, "decline", {"method": "card", "payment_method": token})
    assert resp.status_code == 402, resp.text
    assert (resp.json()["error"], resp.json()["code"]) == (error, code)
    mine = real.http.get("/api/jobs/mine", headers=headers).json()["jobs"]
    assert [j["status"] for j in mine] == ["payment_failed"]  # the draft is kept, nothing posted


def test_paid_posting_replay_and_mismatch(real: Real) -> None:
    _, headers = company()
    first = post_job(real, headers, "k1", {"method": "card", "payment_method": "pm_card_visa"})
    assert first.status_code == 201, first.text
    job = first.json()["job"]
    assert (job["status"], job["payment_status"]) == ("active", "completed")
    again = post_job(real, headers, "k1", {"method": "card", "payment_method": "pm_card_visa"})
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers["Idempotent-Replayed"] == "true"
    other = post_job(real, headers, "k1", {"method": "credits"})
    assert other.status_code == 422
    assert other.json()["error"] == "IDEMPOTENCY_KEY_REUSED"
    # Public, but without its payment; another company cannot see its audit trail.
    public = real.http.get(f"/api/jobs/{job['id']}").json()
    assert public["status"] == "active" and public["payment_id"] is None
    _, stranger = company()
    assert real.http.get(f"/api/jobs/{job['id']}/transitions", headers=stranger).status_code == 404


def test_admins_read_postings_but_only_companies_manage_them(real: Real) -> None:
    """What the gateway README's API table says: an admin passes the edge's role check, then the
    jobs service refuses drafts, the own-jobs list and paying (403); reading a draft works."""
    _, headers = company()
    draft = real.http.post("/api/jobs/drafts", json=JOB, headers=headers)
    assert draft.status_code == 201, draft.text
    job_id = draft.json()["id"]
    admin_token = issue_token(user_id="ops-admin", role="admin")
    admin = {"Authorization": f"Bearer {admin_token}"}
    assert real.http.get(f"/api/jobs/{job_id}", headers=admin).status_code == 200
    refused = [
        real.http.post("/api/jobs/drafts", json=JOB, headers=admin),
        real.http.patch(
            f"/api/jobs/drafts/{job_id}", json={"title": "Staff Engineer"}, headers=admin
        ),
        real.http.get("/api/jobs/mine", headers=admin),
        post_job(real, admin, "admin-1", {"method": "card", "payment_method": "pm_card_visa"}),
    ]
    assert [(r.status_code, r.json()["error"]) for r in refused] == [(403, "FORBIDDEN")] * 4


def test_one_trace_from_the_edge_through_jobs_and_payments(real: Real) -> None:
    _, headers = company()
    trace_id = secrets.token_hex(16)
    headers = {**headers, "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
    resp = post_job(real, headers, "traced", {"method": "card", "payment_method": "pm_card_visa"})
    assert resp.status_code == 201
    services: set[str] = set()
    for _ in range(50):
        services = {s["service"] for s in real.spans(trace_id)}
        if {"gateway", "jobs", "payments"} <= services:
            break
        time.sleep(0.1)
    assert {"gateway", "jobs", "payments"} <= services


def test_subscription_paid_on_the_hosted_page_then_verified(real: Real) -> None:
    user, headers = company()
    sub = {
        "userType": "COMPANY",
        "userId": user,
        "email": f"{user}@example.com",
        "plan": "MONTHLY",
        "paymentMethod": "STRIPE",
        "returnUrl": "https://app.example/subscription/success",
        "cancelUrl": "https://app.example/subscription/cancel",
    }
    started = real.http.post("/api/payments/subscribe", json=sub, headers=headers)
    assert started.status_code == 200, started.text
    txn = started.json()
    assert txn["status"] == "PENDING" and txn["checkoutUrl"]
    paid = real.sandbox.pay_checkout(txn["checkoutUrl"])
    assert paid.status_code in (200, 303), paid.text
    verified: dict[str, Any] = {}
    for _ in range(100):  # the webhook reaches payments through the gateway
        verified = real.http.get(
            f"/api/payments/verify/{txn['transactionId']}", headers=headers
        ).json()
        if verified["status"] != "PENDING":
            break
        time.sleep(0.1)
    assert verified["status"] == "SUCCESS", verified
    assert verified["subscriptionStartDate"] and verified["subscriptionEndDate"]
    assert (
        verified["amount"]
        == f"{verified['amountMinor'] // 100}.{verified['amountMinor'] % 100:02d}"
    )
    again = real.http.post("/api/payments/subscribe", json=sub, headers=headers)
    assert again.status_code == 409
    assert again.json()["error"] == "ALREADY_SUBSCRIBED"
    assert again.json()["expiresAt"]
    _, stranger = company()
    assert (
        real.http.get(f"/api/payments/verify/{txn['transactionId']}", headers=stranger).status_code
        == 404
    )


def test_subscription_cancelled_on_the_hosted_page(real: Real) -> None:
    user, headers = company()
    sub = {
        "userType": "COMPANY",
        "userId": user,
        "email": f"{user}@example.com",
        "plan": "MONTHLY",
        "returnUrl": "https://app.example/subscription/success",
        "cancelUrl": "https://app.example/subscription/cancel",
    }
    started = real.http.post("/api/payments/subscribe", json=sub, headers=headers)
    assert started.status_code == 200, started.text
    txn = started.json()
    page = real.sandbox.cancel_checkout(txn["checkoutUrl"])
    # The hosted page sends the customer to the gateway, which settles and redirects onwards.
    target = page.headers.get("location", "")
    assert "/api/payments/checkout/cancel" in target, (page.status_code, page.text[:200])
    page = real.http.get(target, follow_redirects=False)
    assert page.status_code == 200 and 'method="post"' in page.text  # a GET changes nothing
    landed = real.http.post(
        "/api/payments/checkout/cancel",
        data={"ref": page.url.params["ref"]},
        follow_redirects=False,
    )
    assert landed.status_code == 303
    assert landed.headers["location"] == "https://app.example/subscription/cancel"
    status = real.http.get(f"/api/payments/verify/{txn['transactionId']}", headers=headers).json()
    assert status["status"] == "CANCELLED"


@pytest.fixture
def faults(real: Real) -> Iterator[SandboxAdmin]:
    real.sandbox.clear_faults()
    yield real.sandbox
    real.sandbox.clear_faults()


def test_provider_down_is_502_and_posts_nothing(real: Real, faults: SandboxAdmin) -> None:
    faults.add_fault("down", path_prefix="/v1/payment_intents", method="POST")
    _, headers = company()
    started = time.monotonic()
    resp = post_job(real, headers, "down", {"method": "card", "payment_method": "pm_card_visa"})
    assert resp.status_code == 502, resp.text
    assert resp.json()["error"] == "PAYMENT_PROVIDER_UNAVAILABLE"
    assert time.monotonic() - started < 20
    mine = real.http.get("/api/jobs/mine", headers=headers).json()["jobs"]
    assert all(j["status"] != "active" for j in mine)


def test_provider_timeout_is_504_with_the_payment_id(real: Real, faults: SandboxAdmin) -> None:
    faults.add_fault("timeout", seconds=5, path_prefix="/v1/payment_intents", method="POST")
    _, headers = company()
    resp = post_job(real, headers, "slow", {"method": "card", "payment_method": "pm_card_visa"})
    assert resp.status_code == 504, resp.text
    data = resp.json()
    assert data["error"] == "PAYMENT_TIMEOUT"
    assert data["retry"] is True
    assert data["transactionId"]


def test_forged_webhook_is_refused(real: Real) -> None:
    resp = real.http.post(
        "/api/payments/webhook/stripe",
        content=b'{"id": "evt_forged", "type": "payment_intent.succeeded"}',
        headers={"Stripe-Signature": f"t={int(time.time())},v1={'0' * 64}"},
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "INVALID_SIGNATURE"
