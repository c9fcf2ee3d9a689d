"""The shared Payment API end to end (API-1, API-2, API-3, API-6): subscribe -> hosted checkout ->
signed webhook -> verify, with the gateway, payments, the sandbox and PostgreSQL all real."""

from __future__ import annotations

import datetime as dt

from tests.e2e.conftest import System, new_company
from tests.support.waiting import eventually

PLAN_PRICE_USD = 3000  # COMPANY MONTHLY


def subscribe(system: System, user: str, role: str = "company", user_type: str = "COMPANY"):
    return system.http.post(
        "/api/payments/subscribe",
        json={
            "userType": user_type,
            "userId": user,
            "email": f"{user}@example.test",
            "plan": "MONTHLY",
            "paymentMethod": "STRIPE",
            "returnUrl": "https://app.example/subscription/success",
            "cancelUrl": "https://app.example/subscription/cancel",
        },
        headers=system.headers(user, role),
    )


def verify(system: System, user: str, txn: str, role: str = "company") -> dict:
    response = system.http.get(f"/api/payments/verify/{txn}", headers=system.headers(user, role))
    assert response.status_code == 200, response.text
    return response.json()


def status_is(system: System, user: str, txn: str, status: str) -> dict:
    body = verify(system, user, txn)
    assert body["status"] == status, body
    return body


def test_pay_with_4242_activates_the_subscription(system: System) -> None:
    user = new_company()
    started = subscribe(system, user)
    assert started.status_code == 200, started.text
    body = started.json()
    assert body["status"] == "PENDING" and body["transactionId"] and body["expiresAt"]
    pending = verify(system, user, body["transactionId"])
    assert pending["status"] == "PENDING" and pending["subscriptionStartDate"] is None

    paid = system.admin.pay_checkout(body["checkoutUrl"], "4242 4242 4242 4242")
    assert paid.status_code == 303
    assert paid.headers["location"].startswith("https://app.example/subscription/success")

    done = eventually(lambda: status_is(system, user, body["transactionId"], "SUCCESS"), timeout=30)
    assert done["amountMinor"] == PLAN_PRICE_USD and done["amount"] == "30.00"
    assert done["currency"] == "USD" and done["email"] == f"{user}@example.test"
    start = dt.date.fromisoformat(done["subscriptionStartDate"])
    end = dt.date.fromisoformat(done["subscriptionEndDate"])
    assert start <= dt.date.today() + dt.timedelta(days=1) and end > start

    again = subscribe(system, user)
    assert again.status_code == 409 and again.json()["error"] == "ALREADY_SUBSCRIBED"
    assert again.json()["expiresAt"].startswith(done["subscriptionEndDate"])


def test_declined_card_fails_and_activates_nothing(system: System) -> None:
    user = new_company()
    body = subscribe(system, user).json()
    page = system.admin.pay_checkout(body["checkoutUrl"], "4000 0000 0000 0002")
    assert page.status_code in (200, 402) and "declined" in page.text.lower()
    done = eventually(lambda: status_is(system, user, body["transactionId"], "FAILED"), timeout=30)
    assert done["subscriptionStartDate"] is None and done["subscriptionEndDate"] is None
    # Nothing active: a new subscription may start.
    assert subscribe(system, user).status_code == 200


def test_cancelling_on_the_checkout_page_cancels_the_transaction(system: System) -> None:
    user = new_company()
    body = subscribe(system, user).json()
    cancelled = system.admin.cancel_checkout(body["checkoutUrl"])
    assert cancelled.status_code in (302, 303)
    # The provider's redirect only shows a confirmation page; the bare GET changes nothing.
    page = system.http.get(cancelled.headers["location"])
    assert page.status_code == 200 and 'method="post"' in page.text
    assert verify(system, user, body["transactionId"])["status"] == "PENDING"
    back = system.http.post("/api/payments/checkout/cancel", data={"ref": page.url.params["ref"]})
    assert back.status_code == 303
    assert back.headers["location"] == "https://app.example/subscription/cancel"
    done = eventually(
        lambda: status_is(system, user, body["transactionId"], "CANCELLED"), timeout=30
    )
    assert done["subscriptionStartDate"] is None


def test_applicant_subscribes_and_others_cannot_verify(system: System) -> None:
    applicant = f"ap-{new_company()}"
    body = subscribe(system, applicant, role="applicant", user_type="APPLICANT").json()
    system.admin.pay_checkout(body["checkoutUrl"])
    eventually(lambda: status_is(system, applicant, body["transactionId"], "SUCCESS"), timeout=30)
    stranger = system.http.get(
        f"/api/payments/verify/{body['transactionId']}", headers=system.headers("someone-else")
    )
    assert stranger.status_code == 404
    admin = verify(system, "ops-admin", body["transactionId"], role="admin")
    assert admin["status"] == "SUCCESS"
    # Someone else's userId in the body is refused.
    forged = system.http.post(
        "/api/payments/subscribe",
        json={
            "userType": "COMPANY",
            "userId": "victim",
            "email": "v@example.test",
            "plan": "MONTHLY",
            "paymentMethod": "STRIPE",
            "returnUrl": "https://a.example/s",
            "cancelUrl": "https://a.example/c",
        },
        headers=system.headers("attacker"),
    )
    assert forged.status_code == 403


def test_forged_webhook_is_refused_and_changes_nothing(system: System) -> None:
    user = new_company()
    body = subscribe(system, user).json()
    forged = system.http.post(
        "/api/payments/webhook/stripe",
        content=b'{"id": "evt_forged", "type": "checkout.session.completed", "data": {"object": {}}}',
        headers={"Stripe-Signature": "t=1,v1=deadbeef", "Content-Type": "application/json"},
    )
    assert forged.status_code == 400 and forged.json()["error"] == "INVALID_SIGNATURE"
    assert verify(system, user, body["transactionId"])["status"] == "PENDING"
