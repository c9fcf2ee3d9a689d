"""Pay-to-post through HTTP with every process real (seed 000 sections 11-13, SPEC PAY-4..12).

Each scenario asserts the money at the provider (held, taken), the job's status and payment fields,
and the public list — not just status codes.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid

import httpx
import pytest

from tests.e2e.conftest import (
    REFUSE_ACTIVATION_MARKER,
    System,
    job_fields,
    new_company,
)
from tests.support.waiting import eventually

FEE = {"amount_minor": 14900, "currency": "USD"}  # engineering category, default price list


def post(system: System, company: str, key: str, payment: dict, **body) -> httpx.Response:
    payload = {"payment": payment, "accept_terms": True, **body}
    payload.setdefault("job", job_fields()) if "draft_id" not in body else None
    return system.http.post(
        "/api/jobs/create-with-payment", json=payload, headers=system.headers(company, key=key)
    )


def assert_nothing_posted(system: System, company: str) -> dict:
    """No job active, nothing held, nothing taken; the draft is kept as payment_failed."""
    jobs = system.my_jobs(company)
    assert jobs and all(job["status"] == "payment_failed" for job in jobs), jobs
    assert not {job["id"] for job in jobs} & system.public_job_ids()
    money = eventually(lambda: _settled_to_zero(system, company), timeout=30)
    assert money.held == 0 and money.taken == 0
    return jobs[0]


def _settled_to_zero(system: System, company: str):
    money = system.money(company)
    assert money.held == 0 and money.taken == 0, money
    return money


@pytest.mark.parametrize(
    ("payment_method", "status", "error", "code"),
    [
        ("pm_card_chargeDeclined", 402, "PAYMENT_DECLINED", "card_declined"),
        ("pm_card_chargeDeclinedExpiredCard", 402, "PAYMENT_DECLINED", "expired_card"),
        ("pm_card_chargeDeclinedIncorrectCvc", 402, "PAYMENT_DECLINED", "incorrect_cvc"),
        ("pm_card_chargeDeclinedProcessingError", 402, "PAYMENT_DECLINED", "processing_error"),
        (
            "pm_card_chargeDeclinedInsufficientFunds",
            402,
            "INSUFFICIENT_FUNDS",
            "insufficient_funds",
        ),
        ("pm_card_doesNotExist", 400, "INVALID_PAYMENT_DETAILS", None),
    ],
)
def test_declined_or_invalid_card_posts_nothing(
    system: System, payment_method, status, error, code
) -> None:
    company = new_company()
    response = post(system, company, "k1", {"method": "card", "payment_method": payment_method})
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error and body["message"]
    if code:
        assert body["code"] == code
    draft = assert_nothing_posted(system, company)
    assert draft["title"] == job_fields()["title"]  # the draft is kept with its fields
    assert draft["payment_status"] in ("failed", None)
    assert draft["posted_at"] is None


def test_provider_down_posts_nothing(system: System) -> None:
    company = new_company()
    system.admin.add_fault("down", path_prefix="/v1/payment_intents")
    response = post(system, company, "k1", {"method": "card", "payment_method": "pm_card_visa"})
    assert response.status_code == 502, response.text
    assert response.json()["error"] == "PAYMENT_PROVIDER_UNAVAILABLE"
    assert response.json()["retry"] is True
    system.admin.clear_faults()
    assert_nothing_posted(system, company)


@pytest.mark.parametrize("fault", ["timeout", "timeout_after_commit"])
def test_network_timeout_posts_nothing_and_is_never_charged(system: System, fault: str) -> None:
    """The provider does not answer in time ("timeout"), or performs the authorization but its
    answer is lost ("timeout_after_commit"): 504, and the UNKNOWN payment is polled, then voided."""
    company = new_company()
    system.admin.add_fault(fault, seconds=5, path_prefix="/v1/payment_intents")
    response = post(system, company, "k1", {"method": "card", "payment_method": "pm_card_visa"})
    assert response.status_code == 504, response.text
    body = response.json()
    assert body["error"] == "PAYMENT_TIMEOUT" and body["retry"] is True
    assert body["transactionId"].startswith("pay_")
    system.admin.clear_faults()  # the provider recovers; the poller learns the real outcome
    assert_nothing_posted(system, company)
    assert system.money(company).intents <= 1  # never a second charge attempt at the provider


def test_success_is_active_at_once_with_payment_fields(system: System) -> None:
    company = new_company()
    response = post(system, company, "k1", {"method": "card", "payment_method": "pm_card_visa"})
    assert response.status_code == 201, response.text
    job = response.json()["job"]
    assert job["status"] == "active"
    assert job["payment_status"] == "completed"
    assert job["payment_amount"] == FEE
    assert job["payment_id"] and job["posted_at"] and job["expires_at"]
    assert job["id"] in system.public_job_ids()
    money = system.money(company)
    assert (money.intents, money.held, money.taken) == (1, 0, FEE["amount_minor"])
    transitions = system.http.get(
        f"/api/jobs/{job['id']}/transitions", headers=system.headers(company)
    ).json()["transitions"]
    assert [t["to_status"] for t in transitions][-2:] == ["pending_payment", "active"]


def test_retry_after_failure_succeeds_without_interference(system: System) -> None:
    company = new_company()
    first = post(
        system, company, "k1", {"method": "card", "payment_method": "pm_card_chargeDeclined"}
    )
    assert first.status_code == 402
    draft_id = system.my_jobs(company)[0]["id"]
    retry = post(
        system,
        company,
        "k2",
        {"method": "card", "payment_method": "pm_card_visa"},
        draft_id=draft_id,
    )
    assert retry.status_code == 201, retry.text
    assert retry.json()["job"]["id"] == draft_id and retry.json()["job"]["status"] == "active"
    # The failed attempt's key still answers its own (failed) outcome, and charged nothing.
    again = post(
        system, company, "k1", {"method": "card", "payment_method": "pm_card_chargeDeclined"}
    )
    assert again.status_code == 402 and again.json() == first.json()
    money = system.money(company)
    assert money.taken == FEE["amount_minor"] and money.held == 0


def test_bank_transfer_is_activated_by_the_webhook(system: System) -> None:
    company = new_company()
    response = post(system, company, "k1", {"method": "bank_transfer"})
    assert response.status_code == 202, response.text
    job = response.json()["job"]
    assert job["status"] == "pending_payment" and job["payment_status"] == "pending"
    assert job["id"] not in system.public_job_ids()
    intent = eventually(lambda: _one_intent(system, company))
    assert intent.status == "processing"
    system.admin.settle_payment_intent(intent.id, "succeeded")
    active = eventually(lambda: _status(system, company, job["id"], "active"), timeout=30)
    assert active["payment_status"] == "completed" and active["posted_at"]
    assert job["id"] in system.public_job_ids()
    assert system.money(company).taken == FEE["amount_minor"]


def test_bank_transfer_that_bounces_fails_the_job(system: System) -> None:
    company = new_company()
    response = post(system, company, "k1", {"method": "bank_transfer"})
    assert response.status_code == 202, response.text
    intent = eventually(lambda: _one_intent(system, company))
    system.admin.settle_payment_intent(intent.id, "failed")
    failed = eventually(
        lambda: _status(system, company, response.json()["job"]["id"], "payment_failed"), timeout=30
    )
    assert failed["payment_status"] == "failed"
    assert system.money(company).taken == 0


def test_money_taken_but_activation_impossible_is_refunded(system: System) -> None:
    company = new_company()
    response = post(
        system,
        company,
        "k1",
        {"method": "card", "payment_method": "pm_card_visa"},
        job=job_fields(f"Data engineer {REFUSE_ACTIVATION_MARKER}"),
    )
    assert response.status_code in (409, 500), response.text
    assert response.json()["error"] == "ACTIVATION_FAILED"
    job = system.my_jobs(company)[0]
    assert job["status"] == "payment_failed"
    money = eventually(lambda: _settled_to_zero(system, company), timeout=30)
    assert money.held == 0 and money.taken == 0


def test_bank_transfer_settling_after_cancellation_is_refunded(system: System) -> None:
    company = new_company()
    response = post(system, company, "k1", {"method": "bank_transfer"})
    assert response.status_code == 202
    job_id = response.json()["job"]["id"]
    cancel = system.http.post(
        f"/api/jobs/{job_id}/cancel",
        json={"reason": "changed my mind"},
        headers=system.headers(company),
    )
    assert cancel.status_code == 200, cancel.text
    intent = eventually(lambda: _one_intent(system, company))
    system.admin.settle_payment_intent(intent.id, "succeeded")
    # The money arrived for a job that can no longer go live: it is returned automatically.
    eventually(lambda: _settled_to_zero(system, company), timeout=30)
    assert system.job(company, job_id)["status"] != "active"
    assert job_id not in system.public_job_ids()


def test_concurrent_submissions_with_one_key_make_one_charge_and_one_job(system: System) -> None:
    company = new_company()
    payload = {
        "job": job_fields(),
        "payment": {"method": "card", "payment_method": "pm_card_visa"},
        "accept_terms": True,
    }
    headers = system.headers(company, key="same-key")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=system.stack.gateway_url, timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post("/api/jobs/create-with-payment", json=payload, headers=headers)
                    for _ in range(20)
                )
            )

    responses = asyncio.run(burst())
    assert {r.status_code for r in responses} == {201}, [
        r.text for r in responses if r.status_code != 201
    ]
    bodies = {json.dumps(r.json(), sort_keys=True) for r in responses}
    assert len(bodies) == 1
    assert len(system.my_jobs(company)) == 1
    money = system.money(company)
    assert (money.intents, money.taken) == (1, FEE["amount_minor"])
    # The same key with another body is refused and changes nothing.
    other = system.http.post(
        "/api/jobs/create-with-payment",
        json={**payload, "job": job_fields("Another title")},
        headers=headers,
    )
    assert other.status_code == 422 and other.json()["error"] == "IDEMPOTENCY_KEY_REUSED"
    assert len(system.my_jobs(company)) == 1


def test_idempotency_key_is_required_and_scoped_to_the_caller(system: System) -> None:
    company, other_company = new_company(), new_company()
    missing = system.http.post(
        "/api/jobs/create-with-payment",
        json={
            "job": job_fields(),
            "payment": {"method": "card", "payment_method": "pm_card_visa"},
            "accept_terms": True,
        },
        headers=system.headers(company),
    )
    assert missing.status_code == 400 and missing.json()["error"] == "IDEMPOTENCY_KEY_REQUIRED"
    assert system.my_jobs(company) == []
    first = post(
        system, company, "shared-key", {"method": "card", "payment_method": "pm_card_visa"}
    )
    second = post(
        system, other_company, "shared-key", {"method": "card", "payment_method": "pm_card_visa"}
    )
    assert first.status_code == second.status_code == 201
    assert first.json()["job"]["id"] != second.json()["job"]["id"]
    assert system.money(company).taken == system.money(other_company).taken == FEE["amount_minor"]


def test_lost_response_is_recovered_by_reading_the_job(system: System) -> None:
    company = new_company()
    payload = {
        "job": job_fields(),
        "payment": {"method": "card", "payment_method": "pm_card_visa"},
        "accept_terms": True,
    }
    # The provider is slow this once (its answer to the authorization takes 1 s, within the
    # stack's 2 s provider timeout), and the browser gives up (refresh) before the answer arrives:
    # a posting answered in time would lose nothing. Only a POST (the authorization): a fetch of an
    # earlier test's payment must not take the one slow answer.
    system.admin.add_fault(
        "latency", ms=1000, count=1, method="POST", path_prefix="/v1/payment_intents"
    )
    try:
        with pytest.raises(httpx.TimeoutException):
            system.http.post(
                "/api/jobs/create-with-payment",
                json=payload,
                headers=system.headers(company, key="refresh"),
                timeout=0.3,
            )
    finally:
        system.admin.clear_faults()
    job = eventually(lambda: _only_job_with_status(system, company, "active"), timeout=30)
    replay = system.http.post(
        "/api/jobs/create-with-payment",
        json=payload,
        headers=system.headers(company, key="refresh"),
    )
    assert replay.status_code == 201 and replay.json()["job"]["id"] == job["id"]
    assert system.money(company).taken == FEE["amount_minor"]


def test_user_cancelling_on_the_checkout_page_is_no_charge_no_job(system: System) -> None:
    company = new_company()
    response = post(
        system,
        company,
        "k1",
        {
            "method": "checkout",
            "return_url": "https://app.example/ok",
            "cancel_url": "https://app.example/cancelled",
        },
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["job"]["status"] == "pending_payment"
    checkout_url = body["next_action"]["url"]
    page = system.admin.http.get(checkout_url)
    assert page.status_code == 200 and "card" in page.text.lower()
    cancelled = system.admin.cancel_checkout(checkout_url)
    assert cancelled.status_code in (302, 303)
    page = system.http.get(cancelled.headers["location"])  # the provider sends the person to us
    assert page.status_code == 200 and 'method="post"' in page.text  # a bare GET changes nothing
    back = system.http.post(
        "/api/payments/checkout/cancel", data={"ref": page.url.params["ref"]}
    )  # the page's form
    assert back.status_code == 303 and back.headers["location"] == "https://app.example/cancelled"
    eventually(lambda: _status(system, company, body["job"]["id"], "payment_failed"), timeout=30)
    assert body["job"]["id"] not in system.public_job_ids()
    money = system.money(company)
    assert money.held == 0 and money.taken == 0


def test_paying_on_the_checkout_page_activates_the_job(system: System) -> None:
    company = new_company()
    response = post(
        system, company, "k1", {"method": "checkout", "return_url": "https://app.example/ok"}
    )
    assert response.status_code == 202, response.text
    paid = system.admin.pay_checkout(response.json()["next_action"]["url"])
    assert paid.status_code == 303 and paid.headers["location"].startswith("https://app.example/ok")
    job_id = response.json()["job"]["id"]
    eventually(lambda: _status(system, company, job_id, "active"), timeout=30)
    # Activation comes first, then the capture (Confirm) completes the payment.
    eventually(lambda: system.job(company, job_id)["payment_status"] == "completed", timeout=30)
    eventually(lambda: system.money(company).taken == FEE["amount_minor"], timeout=30)


def test_one_trace_spans_the_edge_and_every_grpc_hop(system: System) -> None:
    company = new_company()
    response = post(
        system,
        company,
        f"trace-{uuid.uuid4().hex}",
        {"method": "card", "payment_method": "pm_card_visa"},
    )
    assert response.status_code == 201
    trace_id = response.headers["x-trace-id"]

    def services_in_trace() -> list[dict]:
        spans = [
            json.loads(line) for line in system.traces.read_text().splitlines() if line.strip()
        ]
        trace = [s for s in spans if s["trace_id"] == trace_id]
        found = {s["service"] for s in trace}
        assert {"gateway", "jobs", "payments"} <= found, found
        # The edge's SERVER span ends after the response is sent: its gRPC CLIENT span (and the
        # hops behind it) may be on disk first, so wait for the edge's own span too.
        assert any(s["service"] == "gateway" and s["kind"] == "SERVER" for s in trace), trace
        # The provider calls have their own spans (the bench's latency budget shows that hop).
        provider = {s["name"] for s in trace if s["name"].startswith("provider.")}
        assert {"provider.authorize", "provider.capture"} <= provider, provider
        return trace

    trace = eventually(services_in_trace, timeout=10)
    # The spans are the OpenTelemetry instrumentations': the HTTP request's SERVER span at the
    # edge, then for every gRPC hop a CLIENT span in the caller and exactly one SERVER span in the
    # callee (no second, hand-made one), the callee's a child of the caller's.
    [edge] = [s for s in trace if s["service"] == "gateway" and s["kind"] == "SERVER"]
    assert edge["name"] == "POST /api/jobs/create-with-payment"
    hops = [s for s in trace if s["kind"] == "CLIENT" and s["name"].startswith("/hirepay.")]
    assert {h["name"] for h in hops} >= {
        "/hirepay.jobs.v1.JobsService/CreateJobWithPayment",
        "/hirepay.payments.v1.PaymentsService/Authorize",
    }
    for hop in hops:
        servers = [
            s for s in trace if s["kind"] == "SERVER" and s["parent_span_id"] == hop["span_id"]
        ]
        assert [s["name"] for s in servers] == [hop["name"]], (hop, servers)


def _one_intent(system: System, company: str):
    from hirepay_dev.sandbox_client import stripe_client
    from hirepay_dev.stack import DEV_STRIPE_KEY

    client = stripe_client(system.stack.sandbox_url, DEV_STRIPE_KEY, allow_sync=True)
    found = client.v1.payment_intents.search(
        params={"query": f"metadata['company_id']:'{company}'"}
    ).data
    assert len(found) == 1, found
    return found[0]


def _status(system: System, company: str, job_id: str, status: str) -> dict:
    job = system.job(company, job_id)
    assert job["status"] == status, job
    return job


def _only_job_with_status(system: System, company: str, status: str) -> dict:
    jobs = system.my_jobs(company)
    assert len(jobs) == 1 and jobs[0]["status"] == status, jobs
    return jobs[0]


def test_a_slow_provider_serves_concurrent_postings_and_their_racing_webhooks(
    system: System,
) -> None:
    """With 300 ms on every provider call (the bench's latency case), 32 postings at once all go
    live at once (none left pending by a deadline), each with exactly one authorization and one
    capture (no call replayed), while the sandbox sends each event as it answers, so that the
    events race their requests (issue 13; payments counts its provider calls by operation)."""
    companies = [new_company() for _ in range(32)]
    before = _provider_calls(system)
    system.admin.add_fault("latency", ms=300)

    async def post_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=system.stack.gateway_url, timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/api/jobs/create-with-payment",
                        json={
                            "job": job_fields(),
                            "payment": {"method": "card", "payment_method": "pm_card_visa"},
                            "accept_terms": True,
                        },
                        headers=system.headers(company, key="slow"),
                    )
                    for company in companies
                )
            )

    responses = asyncio.run(post_all())
    assert [r.status_code for r in responses] == [201] * len(companies)
    assert {r.json()["job"]["status"] for r in responses} == {"active"}
    eventually(lambda: _webhooks_delivered(system), timeout=60)
    calls = {op: n - before.get(op, 0) for op, n in _provider_calls(system).items()}
    assert (calls.get("authorize"), calls.get("capture")) == (32, 32)
    system.admin.clear_faults()
    for company in companies:
        assert system.money(company).taken == FEE["amount_minor"]


def _webhooks_delivered(system: System) -> dict[str, int]:
    backlog = system.admin.webhook_backlog()
    assert not backlog.get("pending") and not backlog.get("scheduled"), backlog
    return backlog


def _provider_calls(system: System) -> dict[str, float]:
    """Payments' provider calls so far by operation (its Prometheus counter, every outcome)."""
    port = system.stack.services["payments"].metrics_port
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    calls: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(
            r'hirepay_provider_call_duration_seconds_count\{operation="(\w+)".*\} (\S+)$', line
        )
        if match:
            calls[match[1]] = calls.get(match[1], 0.0) + float(match[2])
    return calls
