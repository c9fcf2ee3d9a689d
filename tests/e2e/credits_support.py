"""Helpers of the plans-and-credits end-to-end tests: buying a plan through the hosted checkout,
reading the wallet's ledger, replaying a provider event, posting and viewing with credits."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections import Counter
from typing import Any

import asyncpg
import httpx

from hirepay_dev.pg import libpq_url
from hirepay_dev.sandbox_client import stripe_client
from hirepay_dev.stack import DEV_STRIPE_KEY, DEV_WEBHOOK_SECRET
from tests.e2e.conftest import System, job_fields
from tests.support import wallet_reads
from tests.support.waiting import eventually

JOB, CANDIDATE = "JOB_CREDIT", "CANDIDATE_CREDIT"
SWIFT_HIRE_USD = 4900
# Whose clearing account the Stripe sandbox's money goes through (ESC-1).
STRIPE_CLEARING = "provider:stripe"


def subscribe(
    system: System, user: str, plan: str, *, role: str = "company", key: str | None = None
) -> httpx.Response:
    user_type = "APPLICANT" if role == "applicant" else "COMPANY"
    return system.http.post(
        "/api/payments/subscribe",
        json={
            "userType": user_type,
            "userId": user,
            "email": f"{user}@example.test",
            "plan": plan,
            "paymentMethod": "STRIPE",
            "returnUrl": "https://app.example/plans/success",
            "cancelUrl": "https://app.example/plans/cancel",
        },
        headers=system.headers(user, role, key=key),
    )


def verify(system: System, user: str, txn: str, role: str = "company") -> dict[str, Any]:
    response = system.http.get(f"/api/payments/verify/{txn}", headers=system.headers(user, role))
    assert response.status_code == 200, response.text
    return response.json()


def wait_status(system: System, user: str, txn: str, status: str, role: str = "company") -> dict:
    def check() -> dict:
        body = verify(system, user, txn, role)
        assert body["status"] == status, body
        return body

    return eventually(check, timeout=30)


def credits(system: System, company: str) -> dict[str, Any]:
    response = system.http.get("/api/credits", headers=system.headers(company))
    assert response.status_code == 200, response.text
    return response.json()


def wait_credits(system: System, company: str, job: int, candidate: int) -> dict[str, Any]:
    """The issuance is booked on the wallet by payments' grant worker, shortly after settling."""

    def check() -> dict[str, Any]:
        body = credits(system, company)
        assert (body["jobCredits"], body["candidateCredits"]) == (job, candidate), body
        return body

    return eventually(check, timeout=30)


def buy(system: System, company: str, plan: str = "SWIFT_HIRE", card: str = "4242 4242 4242 4242"):
    """Order, pay on the hosted page; returns the transaction id once the payment settled."""
    started = subscribe(system, company, plan)
    assert started.status_code == 200, started.text
    body = started.json()
    paid = system.admin.pay_checkout(body["checkoutUrl"], card)
    assert paid.status_code in (200, 303, 402), paid.text
    return body["transactionId"]


# --- the wallet's ledger ---------------------------------------------------------------------


def ledger(system: System, owner: str) -> Counter[tuple[str, str]]:
    """Posted balances of an owner's accounts: (kind, unit) -> amount (no account: absent).
    Read once the bookings payments owes the ledger are posted (see bookings_posted)."""
    bookings_posted(system)
    return wallet_reads.balances(system.stack.services["wallet"].target, owner)


def bookings_posted(system: System, timeout: float = 60) -> None:
    """Wait until payments has no booking waiting for its first attempt. The platform's shared
    accounts (revenue, each provider's clearing) take every test's bookings, and a booking is
    posted by payments' worker after its capture: an earlier test's late booking would otherwise
    land between a test's two readings. Bookings the wallet refused and that wait for a retry
    (attempts > 0) are some test's fault injection and are not waited for."""

    async def waiting() -> int:
        url = system.stack.services["payments"].database_url
        conn = await asyncpg.connect(libpq_url(url))
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM credit_grants WHERE status = 'pending' AND attempts = 0"
                )
            )
        finally:
            await conn.close()

    eventually(lambda: asyncio.run(waiting()) == 0, timeout=timeout)


platform_delta = wallet_reads.delta


# --- provider events ---------------------------------------------------------------------------


def checkout_events(system: System, session_id: str) -> list[dict[str, Any]]:
    """The provider's events about one checkout session, as the provider stores them."""
    client = stripe_client(system.stack.sandbox_url, DEV_STRIPE_KEY, allow_sync=True)
    events = client.v1.events.list(params={"limit": 100})
    found = []
    for event in events.data:
        raw = event.to_dict() if hasattr(event, "to_dict") else dict(event)
        if raw.get("data", {}).get("object", {}).get("id") == session_id:
            found.append(raw)
    return found


def signed(body: bytes, secret: str = DEV_WEBHOOK_SECRET) -> str:
    ts = int(time.time())
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def deliver(system: System, event: dict[str, Any], signature: str | None = None) -> httpx.Response:
    body = json.dumps(event).encode()
    return system.http.post(
        "/api/payments/webhook/stripe",
        content=body,
        headers={
            "Stripe-Signature": signature or signed(body),
            "Content-Type": "application/json",
        },
    )


# --- spending ------------------------------------------------------------------------------------


def post_by_credits(system: System, company: str, n: int) -> httpx.Response:
    return system.http.post(
        "/api/jobs/create-with-payment",
        json={
            "job": job_fields(f"Credits posting {n}"),
            "payment": {"method": "credits"},
            "accept_terms": True,
        },
        headers=system.headers(company, key=f"credits-{company}-{n}"),
    )


def new_applicant() -> str:
    return f"ap-{uuid.uuid4().hex[:10]}"


def apply(system: System, applicant: str, job_id: str) -> httpx.Response:
    return system.http.post(
        f"/api/jobs/{job_id}/applications",
        json={
            "name": f"Applicant {applicant}",
            "email": f"{applicant}@example.test",
            "coverLetter": "I build payment systems.",
        },
        headers=system.headers(applicant, "applicant"),
    )


def view(system: System, company: str, application_id: str) -> httpx.Response:
    return system.http.post(
        f"/api/applications/{application_id}/view", headers=system.headers(company)
    )
