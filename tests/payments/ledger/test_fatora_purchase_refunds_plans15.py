"""A plan purchase paid through Fatora and refunded at Fatora's dashboard (Fatora sends no refund
event), found by the provider reconciliation and booked through the webhook's own core (CR-2
credits revoked, ESC-1 every cent, API-4, PAY-15, OPS-3), through the real payments process on
PostgreSQL, the real wallet and the Fatora sandbox (its dashboard refund is the admin route):
REFUNDED with its unused credits revoked and its money back through Fatora's clearing account,
once, whatever the rounds at once; racing the admin's own refund of the same purchase, booked
once whichever wins; the ledger auditor clean."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc
import httpx
import pytest

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay_dev.pg import libpq_url
from tests.payments.ledger.conftest import LedgerStack
from tests.payments.ledger.test_ledger_bookings import FATORA, Ledger, _findings, _transfer
from tests.support import fatora_support
from tests.support.waiting import wait_for

PRICE, JOBS, CANDIDATES = 4_900, 2_500, 50  # SWIFT_HIRE in USD (the default catalogue)


async def _reconcile(jobs_stub) -> pb.ReconcileProviderResponse:  # type: ignore[no-untyped-def]
    return await jobs_stub.ReconcileProvider(pb.ReconcileProviderRequest(limit=20), timeout=10)


async def _transaction(jobs_stub, transaction_id: str) -> pb.Transaction:  # type: ignore[no-untyped-def]
    got = await jobs_stub.GetTransaction(pb.GetTransactionRequest(transaction_id=transaction_id))
    return got.transaction


async def _paid_through_fatora(
    stack: LedgerStack, jobs_stub, company: str
) -> tuple[pb.Transaction, Ledger]:  # type: ignore[no-untyped-def]
    """A company's SWIFT_HIRE bought on Fatora's page, confirmed by the buyer's return, booked."""
    ledger = Ledger(stack, FATORA, "platform", company)
    txn = (
        await jobs_stub.Subscribe(
            pb.SubscribeRequest(
                request_id="s1",
                user_type=pb.USER_TYPE_COMPANY,
                user_id=company,
                email="hr@acme.example",
                plan="SWIFT_HIRE",
                payment_method="FATORA",
                return_url="https://app.example/subscription/success",
                cancel_url="https://app.example/subscription/cancel",
            )
        )
    ).transaction
    paid = await asyncio.to_thread(fatora_support.pay, txn.checkout_url)
    _, params = fatora_support.redirect(paid)
    back = await jobs_stub.ConfirmCheckoutReturn(
        pb.ConfirmCheckoutReturnRequest(provider="fatora", params=params)
    )
    assert back.transaction.status == pb.Transaction.SUCCESS
    await ledger.settles_at(
        {
            FATORA: {("PROVIDER_CLEARING", "USD"): -PRICE},
            "platform": {
                ("PLATFORM_REVENUE", "USD"): PRICE,
                ("ISSUANCE", "JOB_CREDIT"): -JOBS,
                ("ISSUANCE", "CANDIDATE_CREDIT"): -CANDIDATES,
            },
            company: {("USER", "JOB_CREDIT"): JOBS, ("USER", "CANDIDATE_CREDIT"): CANDIDATES},
        }
    )
    return back.transaction, ledger


async def _dashboard_refund(stack: LedgerStack, transaction_id: str) -> None:
    """The merchant refunds the purchase's order in Fatora's dashboard: no event reaches Hirepay."""
    conn = await asyncpg.connect(libpq_url(stack.payments_db))
    try:
        order_id = await conn.fetchval(
            "SELECT provider_payment_intent_id FROM transactions WHERE id = $1", transaction_id
        )
    finally:
        await conn.close()
    assert order_id
    done = await asyncio.to_thread(
        httpx.post, f"{stack.fatora_url}/_sandbox/orders/{order_id}/refund"
    )
    assert done.status_code == 200, done.text


async def _audit(stack: LedgerStack, transaction_id: str) -> list[tuple[str, str, str]]:
    """The purchase's audit trail: (action, actor, `to` of a transition) in order."""
    conn = await asyncpg.connect(libpq_url(stack.payments_db))
    try:
        rows = await conn.fetch(
            "SELECT action, actor, coalesce(details->>'to', '') FROM audit_log"
            " WHERE transaction_id = $1 ORDER BY id",
            transaction_id,
        )
    finally:
        await conn.close()
    return [(r[0], r[1], r[2]) for r in rows]


async def _refunded_once(
    stack: LedgerStack, jobs_stub, txn: pb.Transaction, ledger: Ledger
) -> None:
    """REFUNDED, the money back through Fatora's clearing and the credits revoked: everything
    the purchase moved nets to zero, one revocation booked, one REFUNDED transition on its trail;
    the ledger auditor clean."""
    assert (await _transaction(jobs_stub, txn.transaction_id)).status == pb.Transaction.REFUNDED
    await ledger.settles_at({})
    await asyncio.sleep(0.5)  # the booking worker's further rounds book nothing more
    assert await asyncio.to_thread(ledger.changes) == {}
    revoked = await _transfer(stack, f"payment:{txn.transaction_id}:refund:full")
    assert revoked is not None
    trail = await _audit(stack, txn.transaction_id)
    assert len([a for a in trail if a[2] == "REFUNDED"]) == 1, trail

    async def clean() -> bool:
        return await _findings(jobs_stub) == {}

    await wait_for(clean, timeout=20)


async def test_a_fatora_dashboard_refund_of_a_purchase_is_found_and_booked_once(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    company = f"company-{uuid.uuid4().hex[:12]}"
    txn, ledger = await _paid_through_fatora(ledger_stack, jobs_stub, company)
    await _dashboard_refund(ledger_stack, txn.transaction_id)
    await asyncio.sleep(0.5)
    assert (await _transaction(jobs_stub, txn.transaction_id)).status == pb.Transaction.SUCCESS

    # Two rounds at once (the auditor's and a report on demand), then another: booked once.
    await asyncio.gather(_reconcile(jobs_stub), _reconcile(jobs_stub))
    await _reconcile(jobs_stub)
    await _refunded_once(ledger_stack, jobs_stub, txn, ledger)
    trail = await _audit(ledger_stack, txn.transaction_id)
    assert ("refund", "reconciliation", "REFUNDED") in trail, trail
    assert ("reconcile", "reconciliation", "") in trail, trail


@pytest.mark.parametrize("at_dashboard", [True, False], ids=["dashboard-first", "admin-only"])
async def test_the_reconciliation_racing_the_admins_refund_books_the_purchase_once(
    ledger_stack: LedgerStack, jobs_stub, at_dashboard: bool
) -> None:
    """The admin refunds the purchase while reconciliation rounds run at once: refunded at
    Fatora first from its dashboard (the admin's refund then finds it refunded there), or only by
    the admin (the rounds may read the admin's refund before its request records it)."""
    company = f"company-{uuid.uuid4().hex[:12]}"
    txn, ledger = await _paid_through_fatora(ledger_stack, jobs_stub, company)
    if at_dashboard:
        await _dashboard_refund(ledger_stack, txn.transaction_id)
    admin = jobs_stub.RefundTransaction(
        pb.RefundTransactionRequest(
            request_id="r1", transaction_id=txn.transaction_id, reason="requested_by_customer"
        ),
        timeout=10,
    )
    refunded, *_ = await asyncio.gather(admin, *(_reconcile(jobs_stub) for _ in range(3)))
    assert refunded.transaction.status == pb.Transaction.REFUNDED
    await _reconcile(jobs_stub)
    await _refunded_once(ledger_stack, jobs_stub, txn, ledger)


async def test_the_admins_refund_whose_answer_is_lost_is_booked_by_the_reconciliation_once(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    """The admin's refund takes effect at Fatora but its answer is lost (the purchase stays paid
    here), while reconciliation rounds run at once: the rounds find it refunded and book it, once;
    the admin's retry then finds it REFUNDED and books nothing more."""
    company = f"company-{uuid.uuid4().hex[:12]}"
    txn, ledger = await _paid_through_fatora(ledger_stack, jobs_stub, company)
    fault = {
        "kind": "error_after_commit",
        "status": 500,
        "path_prefix": "/v1/payments/refund",
        "method": "POST",
        "count": 1,
    }
    async with httpx.AsyncClient(base_url=ledger_stack.fatora_url) as fatora:
        armed = await fatora.post("/_sandbox/faults", json=fault)
        assert armed.status_code in (200, 201), armed.text
        try:
            request = pb.RefundTransactionRequest(
                request_id="r1", transaction_id=txn.transaction_id, reason="requested_by_customer"
            )
            lost, *_ = await asyncio.gather(
                jobs_stub.RefundTransaction(request, timeout=10),
                *(_reconcile(jobs_stub) for _ in range(3)),
                return_exceptions=True,
            )
        finally:
            await fatora.delete("/_sandbox/faults")
    assert isinstance(lost, grpc.aio.AioRpcError), lost
    assert lost.code() == grpc.StatusCode.UNAVAILABLE, lost

    async def refunded() -> bool:
        await _reconcile(jobs_stub)  # a round that read Fatora before the refund found none
        got = await _transaction(jobs_stub, txn.transaction_id)
        return got.status == pb.Transaction.REFUNDED

    await wait_for(refunded, timeout=20)
    retried = await jobs_stub.RefundTransaction(request, timeout=10)
    assert retried.transaction.status == pb.Transaction.REFUNDED
    await _refunded_once(ledger_stack, jobs_stub, txn, ledger)
    trail = await _audit(ledger_stack, txn.transaction_id)
    assert ("refund", "reconciliation", "REFUNDED") in trail, trail
