"""A purchase's card dispute shown by the gateway's verify endpoint (API-2, API-4), end to end:
subscribe -> hosted checkout -> the cardholder disputes the charge at the Stripe sandbox ->
payments books it from the signed webhook -> `GET /api/payments/verify/{id}` shows it (status,
reason, amounts in minor units with the currency) while open, and lost (the purchase REFUNDED);
never the provider's dispute id or fees. Gateway, payments, wallet, sandbox and PostgreSQL real."""

from __future__ import annotations

import asyncio

import asyncpg

from hirepay_dev.pg import libpq_url
from hirepay_dev.sandbox_client import stripe_client
from hirepay_dev.stack import DEV_STRIPE_KEY
from tests.e2e.conftest import System, new_company
from tests.e2e.test_subscriptions import PLAN_PRICE_USD, status_is, subscribe, verify
from tests.support.waiting import eventually


def _payment_intent(system: System, transaction_id: str) -> str:
    """The Stripe payment of a purchase (its checkout session's), as payments recorded it."""

    async def read() -> str:
        url = system.stack.services["payments"].database_url
        conn = await asyncpg.connect(libpq_url(url))
        try:
            return str(
                await conn.fetchval(
                    "SELECT provider_payment_intent_id FROM transactions WHERE id = $1",
                    transaction_id,
                )
            )
        finally:
            await conn.close()

    return asyncio.run(read())


def test_verify_shows_a_purchases_dispute_open_then_lost(system: System) -> None:
    user = new_company()
    started = subscribe(system, user)
    assert started.status_code == 200, started.text
    txn = started.json()["transactionId"]
    assert system.admin.pay_checkout(started.json()["checkoutUrl"]).status_code == 303
    paid = eventually(lambda: status_is(system, user, txn, "SUCCESS"), timeout=30)
    assert paid["disputes"] == []

    intent = _payment_intent(system, txn)
    assert intent.startswith("pi_"), intent
    opened = system.admin.dispute_payment_intent(intent, reason="fraudulent")

    def shown() -> dict:
        body = verify(system, user, txn)
        assert body["disputes"], body
        return body

    body = eventually(shown, timeout=30)
    [dispute] = body["disputes"]
    assert body["status"] == "SUCCESS"  # open: the purchase stays paid
    assert {k: v for k, v in dispute.items() if k != "openedAt"} == {
        "status": "needs_response",
        "reason": "fraudulent",
        "amountMinor": PLAN_PRICE_USD,
        "currency": "USD",
        "withdrawnMinor": PLAN_PRICE_USD,
        "reinstatedMinor": 0,
        "closedAt": None,
    }
    assert dispute["openedAt"] and dispute["openedAt"].endswith("Z")
    raw = system.http.get(f"/api/payments/verify/{txn}", headers=system.headers(user)).text
    assert opened["id"] not in raw and "fee" not in raw.lower()

    system.admin.close_dispute(opened["id"], "lost")
    lost = eventually(lambda: status_is(system, user, txn, "REFUNDED"), timeout=30)
    [dispute] = lost["disputes"]
    assert (dispute["status"], dispute["withdrawnMinor"]) == ("lost", PLAN_PRICE_USD)
    assert dispute["closedAt"] and dispute["closedAt"].endswith("Z")
    # An admin sees the same; another company sees nothing of it (SEC-2).
    assert verify(system, "ops-admin", txn, role="admin")["disputes"] == lost["disputes"]
    other = system.http.get(f"/api/payments/verify/{txn}", headers=system.headers(new_company()))
    assert other.status_code == 404 and "dispute" not in other.text

    # (The Stripe client is only to make sure the sandbox shows the dispute as Hirepay does.)
    client = stripe_client(system.stack.sandbox_url, DEV_STRIPE_KEY, allow_sync=True)
    assert client.v1.disputes.retrieve(opened["id"]).status == "lost"
