"""End-to-end fixtures: the whole system as real processes (sandbox, wallet, payments, jobs, gateway)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.service_layer.auth import issue_token
from hirepay_dev.sandbox_client import SandboxAdmin, stripe_client
from hirepay_dev.stack import DEV_STRIPE_KEY, Ports, Stack
from tests.support import jobs_process
from tests.support.databases import SessionDatabases

# Jobs whose title contains this cannot be activated (PAY-7; injected by tests.support.jobs_faults).
REFUSE_ACTIVATION_MARKER = "[activation-fails]"

# Short provider timeout so timeout scenarios run quickly; a generous rate limit except where tested.
E2E_ENV: dict[str, dict[str, str]] = {
    "sandbox": {"SANDBOX_WEBHOOK_RETRY_BASE": "0.2", "SANDBOX_WEBHOOK_RETRY_MAX_DELAY": "2"},
    "payments": {
        "PAYMENTS_PROVIDER_TIMEOUT_SECONDS": "2",
        "PAYMENTS_POLL_INTERVAL_SECONDS": "0.3",
        "PAYMENTS_POLL_MAX_INTERVAL_SECONDS": "1",
    },
    "jobs": {
        jobs_process.REFUSE_ACTIVATION_MARKER: REFUSE_ACTIVATION_MARKER,
        "JOBS_RECOVERY_INTERVAL_SECONDS": "0.3",
        "JOBS_RETRY_BASE_SECONDS": "0.2",
        "JOBS_RETRY_MAX_SECONDS": "1",
        "JOBS_SETTLEMENT_POLL_SECONDS": "2",
        "JOBS_AUDIT_INTERVAL_SECONDS": "1",
        "JOBS_AUDIT_GRACE_SECONDS": "5",
    },
    "gateway": {
        "GATEWAY_RATE_LIMIT_PER_MINUTE": "1000",
        # The subsystems' return and cancel pages the tests use.
        "GATEWAY_ALLOWED_REDIRECT_ORIGINS": "https://app.example,https://a.example",
    },
}


@dataclass
class Money:
    """What the provider holds and has taken for one company (from the sandbox, via the SDK)."""

    intents: int
    held: int  # authorized, not captured
    taken: int  # captured minus refunded


@dataclass
class System:
    """Handles on the running system for tests."""

    stack: Stack
    http: httpx.Client
    admin: SandboxAdmin
    traces: Path

    def token(self, user: str, role: str = "company") -> str:
        return issue_token(user_id=user, role=role, email=f"{user}@example.test")

    def headers(self, user: str, role: str = "company", key: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token(user, role)}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return headers

    def money(self, company: str) -> Money:
        client = stripe_client(self.stack.sandbox_url, DEV_STRIPE_KEY, allow_sync=True)
        found = client.v1.payment_intents.search(
            params={"query": f"metadata['company_id']:'{company}'", "limit": 100}
        )
        held = taken = 0
        count = 0
        for intent in found.data:
            count += 1
            if intent.status == "requires_capture":
                held += intent.amount_capturable
            if intent.status == "succeeded":
                charge_refunded = 0
                refunds = client.v1.refunds.list(params={"payment_intent": intent.id, "limit": 100})
                for refund in refunds.data:
                    if refund.status in ("succeeded", "pending"):
                        charge_refunded += refund.amount
                taken += intent.amount_received - charge_refunded
        return Money(count, held, taken)

    def job(self, company: str, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/jobs/{job_id}", headers=self.headers(company))
        assert response.status_code == 200, response.text
        return response.json()

    def my_jobs(self, company: str) -> list[dict[str, Any]]:
        response = self.http.get("/api/jobs/mine", headers=self.headers(company))
        assert response.status_code == 200, response.text
        body = response.json()
        return body["jobs"] if isinstance(body, dict) else body

    def public_job_ids(self) -> set[str]:
        ids: set[str] = set()
        token = ""
        while True:
            response = self.http.get("/api/jobs", params={"page_size": 200, "page_token": token})
            assert response.status_code == 200, response.text
            body = response.json()
            ids.update(job["id"] for job in body["jobs"])
            token = body.get("next_page_token") or ""
            if not token:
                return ids


def job_fields(title: str = "Senior Python Engineer") -> dict[str, Any]:
    return {
        "title": title,
        "description": "Build the payment backbone of a job marketplace, with care.",
        "location": "Remote",
        "employment_type": "full_time",
        "category": "engineering",
        "salary_range": {"min_minor": 9_000_000, "max_minor": 12_000_000, "currency": "USD"},
    }


def new_company() -> str:
    return f"co-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def system(
    pg_server_url: str, tmp_path_factory: pytest.TempPathFactory, test_databases: SessionDatabases
) -> Iterator[System]:
    traces = tmp_path_factory.mktemp("traces") / "spans.jsonl"
    env = {name: {**values, "HIREPAY_TRACES": f"file:{traces}"} for name, values in E2E_ENV.items()}
    for name in ("wallet",):
        env.setdefault(name, {})["HIREPAY_TRACES"] = f"file:{traces}"
    stack = Stack(
        server_url=pg_server_url,
        ports=Ports.free(),
        db_suffix=f"_e2e_{uuid.uuid4().hex[:6]}",
        fresh=True,
        extra_env=env,
        # The real jobs service, with faults injected from tests by wrapping its ports.
        modules={"jobs": jobs_process.MODULE},
    )
    test_databases.add(*stack.database_names())
    stack.start()
    assert stack.gateway is not None and set(stack.services) == {"wallet", "payments", "jobs"}
    http = httpx.Client(base_url=stack.gateway_url, timeout=60.0)
    admin = SandboxAdmin(stack.sandbox_url)
    try:
        yield System(stack, http, admin, traces)
    finally:
        http.close()
        admin.close()
        stack.stop()


@pytest.fixture(autouse=True)
def _no_faults_left(system: System) -> Iterator[None]:
    system.admin.clear_faults()
    yield
    system.admin.clear_faults()
