"""Helpers of the marketplace end-to-end tests (offers, escrow, concurrent acceptances, payouts):
users, jobs and offers through the gateway, a payment as payments holds it, coins issued to a
wallet, and a user's wallet as GET /api/wallet shows it."""

from __future__ import annotations

import uuid
from typing import Any

from hirepay.common.v1 import common_pb2
from hirepay.payments.v1 import payments_service_pb2 as ppb
from hirepay.payments.v1 import payments_service_pb2_grpc as ppb_grpc
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from tests.e2e.conftest import System
from tests.support.service_auth import signed_channel
from tests.support.waiting import eventually

USD_REVENUE = ("PLATFORM_REVENUE", "USD")
COIN_REVENUE = ("PLATFORM_REVENUE", "COIN")
CLEARING = ("PROVIDER_CLEARING", "USD")


def new_user(role: str) -> str:
    return f"{role[:4]}-{uuid.uuid4().hex[:10]}"


def ok(response: Any, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json()


def payment(system: System, payment_id: str) -> ppb.Payment:
    """The payment as payments holds it (read as jobs, which may read any payment)."""
    target = system.stack.services["payments"].target
    with signed_channel(target, caller="jobs", service="payments") as channel:
        stub = ppb_grpc.PaymentsServiceStub(channel)
        return stub.GetPayment(ppb.GetPaymentRequest(payment_id=payment_id), timeout=5).payment


def market_job(system: System, customer: str) -> str:
    body = {"title": "Build a booking site", "description": "A small booking site in Django."}
    posted = system.http.post(
        "/api/marketplace/jobs", json=body, headers=system.headers(customer, "customer")
    )
    return str(ok(posted, 201)["jobId"])


def send_offer(
    system: System, customer: str, job_id: str, contractor: str, amount: int, funding: str = "card"
) -> dict[str, Any]:
    """An offer sent through the gateway: `card` (USD, authorized) or `coins` (COIN, held)."""
    body = {
        "jobId": job_id,
        "contractorId": contractor,
        "amount": {"amount_minor": amount, "currency": "USD" if funding == "card" else "COIN"},
        "funding": funding,
        "paymentMethod": "pm_card_visa" if funding == "card" else "",
    }
    headers = system.headers(customer, "customer", key=uuid.uuid4().hex)

    def sent() -> dict[str, Any]:
        # A slow provider answers 504 (retry: true); the same key picks the same offer up.
        return ok(system.http.post("/api/bidding", json=body, headers=headers), 201)

    return eventually(sent, timeout=60)["offer"]


def card_engagement(system: System, customer: str, contractor: str, amount: int) -> str:
    """A card offer sent and accepted: the engagement assigned and funded."""
    offer = send_offer(system, customer, market_job(system, customer), contractor, amount)
    accepted = ok(
        system.http.post(
            f"/api/bidding/{offer['id']}/accept", headers=system.headers(contractor, "contractor")
        )
    )
    assert accepted["engagement"]["state"] == "assigned"
    return str(accepted["engagement"]["id"])


def act(system: System, engagement_id: str, action: str, user: str, role: str, **kw: Any):
    """POST /api/engagements/{id}/{action} (start, complete, cancel, dispute) as the user."""
    return system.http.post(
        f"/api/engagements/{engagement_id}/{action}", headers=system.headers(user, role), **kw
    )


def issue_coins(system: System, owner: str, coins: int) -> None:
    """Coins in the customer's COIN wallet, as a coin purchase leaves them (ISSUANCE -> user)."""
    target = system.stack.services["wallet"].target
    with signed_channel(target, caller="payments", service="wallet") as channel:
        stub = wpb_grpc.WalletServiceStub(channel)

        def account(who: str, kind: int) -> str:
            request = wpb.OpenAccountRequest(
                request_id=uuid.uuid4().hex,
                owner_id=who,
                currency="COIN",
                kind=kind,  # type: ignore[arg-type]
                allow_negative=kind == wpb.ACCOUNT_KIND_ISSUANCE,
            )
            return str(stub.OpenAccount(request, timeout=5).account.account_id)

        leg = wpb.TransferLeg(
            from_account_id=account("platform", wpb.ACCOUNT_KIND_ISSUANCE),
            to_account_id=account(owner, wpb.ACCOUNT_KIND_USER),
            amount=common_pb2.Money(amount_minor=coins, currency="COIN"),
        )
        transfer_id = f"test-coins-{uuid.uuid4().hex}"
        stub.Transfer(
            wpb.TransferRequest(request_id=transfer_id, transfer_id=transfer_id, legs=[leg]),
            timeout=5,
        )


def wallet_balances(system: System, user: str, role: str) -> dict[str, tuple[int, int, int]]:
    """GET /api/wallet as the user: unit -> (available, held, posted)."""
    resp = system.http.get("/api/wallet", headers=system.headers(user, role))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["userId"] == user
    return {
        b["unit"]: (b["availableMinor"], b["heldMinor"], b["postedMinor"]) for b in body["balances"]
    }
