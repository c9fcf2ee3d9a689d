"""A plan purchase paid through Fatora and refunded at Fatora's dashboard (Fatora sends no refund
event) over the whole running system (OPS-3, CR-2, API-4): the admin's consistency report
(`GET /api/admin/consistency`, a reconciliation round on demand) shows what its reconciliation
read of paid purchases (`purchaseRefunds`) and, when that round is the one that books the refund,
names the purchase with its money; the purchase ends REFUNDED with its unused credits revoked,
once, whichever round (the report's or the auditor worker's) booked it."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay_dev.pg import libpq_url
from tests.e2e.conftest import System, new_company
from tests.e2e.credits_support import wait_credits
from tests.support import fatora_support
from tests.support.service_auth import signed_aio_channel
from tests.support.waiting import eventually

RETURN_URL = "https://app.example/subscription/success"
CANCEL_URL = "https://app.example/subscription/cancel"
PRICE, JOBS, CANDIDATES = 4_900, 2_500, 50  # SWIFT_HIRE in USD


def _report(system: System) -> dict:
    got = system.http.get("/api/admin/consistency", headers=system.headers("ops-1", "admin"))
    assert got.status_code == 200, got.text
    return dict(got.json())


async def _order_of(system: System, transaction_id: str) -> str:
    conn = await asyncpg.connect(libpq_url(system.stack.services["payments"].database_url))
    try:
        order = await conn.fetchval(
            "SELECT provider_payment_intent_id FROM transactions WHERE id = $1", transaction_id
        )
    finally:
        await conn.close()
    assert order
    return str(order)


async def test_a_fatora_dashboard_refund_of_a_purchase_is_in_the_admins_report(
    system: System,
) -> None:
    company = new_company()
    target = system.stack.services["payments"].target
    async with signed_aio_channel(target, caller="jobs", service="payments") as channel:
        stub = pb_grpc.PaymentsServiceStub(channel)
        started = await stub.Subscribe(
            pb.SubscribeRequest(
                request_id=f"fatora-{company}",
                user_type=pb.USER_TYPE_COMPANY,
                user_id=company,
                email=f"{company}@example.test",
                plan="SWIFT_HIRE",
                payment_method="FATORA",
                return_url=RETURN_URL,
                cancel_url=CANCEL_URL,
            )
        )
    txn = started.transaction.transaction_id
    paid = await asyncio.to_thread(fatora_support.pay, started.transaction.checkout_url)
    callback, _ = fatora_support.redirect(paid)
    back = system.http.get(paid.headers["location"])  # the buyer's browser back through us
    assert back.status_code == 303, back.text
    assert callback.startswith(f"{system.stack.gateway_url}/api/payments/return/fatora")
    wait_credits(system, company, JOBS, CANDIDATES)

    order = await _order_of(system, txn)
    fatora = system.stack.provider_url("fatora")
    refunded = await asyncio.to_thread(httpx.post, f"{fatora}/_sandbox/orders/{order}/refund")
    assert refunded.status_code == 200, refunded.text

    # Rounds on demand until the purchase is REFUNDED here. A round goes on with the pass through
    # paid purchases where the last one left it (durable), and a pass covers the purchases changed
    # before it began: a round may read none (a pass begun before this purchase was paid, at its
    # end), and the next begins a pass that reads it.
    reports: list[dict] = []

    def refunded_here() -> bool:
        reports.append(_report(system))
        got = system.http.get(f"/api/payments/verify/{txn}", headers=system.headers(company))
        assert got.status_code == 200 and got.json()["status"] == "REFUNDED", got.text
        return True

    eventually(refunded_here, timeout=60, interval=1.0)
    wait_credits(system, company, 0, 0)  # the unused credits revoked
    reports.append(_report(system))  # a later round: nothing more to book of it
    mine = [
        (r, b)
        for r in reports
        for b in (r["purchaseRefunds"] or {}).get("booked", [])
        if b["transactionId"] == txn
    ]
    # Every report's round reconciled the paid purchases.
    assert all(r["purchaseRefunds"] is not None for r in reports), reports
    # Booked once: by a report's round, or by the auditor worker's.
    assert len(mine) <= 1, mine
    if mine:
        ((report, booked),) = mine
        assert booked == {
            "transactionId": txn,
            "provider": "fatora",
            "amountMinor": PRICE,
            "currency": "USD",
            "refundedInFull": True,
        }
        # The round that booked it read it and found it.
        assert report["purchaseRefunds"]["purchasesChecked"] >= 1, report
        assert report["purchaseRefunds"]["found"] >= 1, report
