"""A refund made at Fatora's dashboard (Fatora sends no refund event), found by the provider
reconciliation and booked (ESC-1 every cent, API-4, PAY-15, OPS-3), through the real payments
process on PostgreSQL, the real wallet and the Fatora sandbox (its dashboard refund is the admin
route): a coin purchase paid through Fatora and refunded there has its cash booked back through
Fatora's clearing account and its coins taken back, once, whatever the rounds; its
`payment.refunded` settlement event is published; the ledger auditor finds nothing amiss."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay_dev.pg import libpq_url
from tests.payments.ledger.conftest import LedgerStack
from tests.payments.ledger.test_ledger_bookings import (
    FATORA,
    Ledger,
    _buy,
    _findings,
    _id,
    _payment,
    _transfer,
)
from tests.payments.ledger.test_provider_refunds_ledger import _refunds
from tests.support import fatora_support
from tests.support.waiting import wait_for

State = pb.Payment.State


async def _reconcile(jobs_stub) -> pb.ReconcileProviderResponse:
    return await jobs_stub.ReconcileProvider(pb.ReconcileProviderRequest(limit=20), timeout=10)


async def _refund_ids(stack: LedgerStack, payment_id: str) -> list[str]:
    conn = await asyncpg.connect(libpq_url(stack.payments_db))
    try:
        rows = await conn.fetch("SELECT id FROM refunds WHERE payment_id = $1", payment_id)
    finally:
        await conn.close()
    return [r[0] for r in rows]


async def _published(jobs_stub, payment_id: str) -> list[str]:
    """The payment's settlement events, as any subscriber reads them (a coin purchase's are no
    subsystem's: `_events` reads jobs' only)."""
    found = []
    async for event in jobs_stub.StreamSettlementEvents(
        pb.StreamSettlementEventsRequest(after_cursor=0)
    ):
        if event.payment.payment_id == payment_id:
            found.append(event.type)
    return found


async def test_a_fatora_dashboard_refund_is_booked_by_the_reconciliation_once(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    buyer = _id("buyer")
    ledger = Ledger(ledger_stack, FATORA, "platform", buyer)
    opened = await jobs_stub.PurchaseCoins(_buy(buyer, 2_500, "KWD", "fatora"))
    paid = await asyncio.to_thread(fatora_support.pay, opened.checkout_url)
    _, params = fatora_support.redirect(paid)
    back = await jobs_stub.ConfirmCheckoutReturn(
        pb.ConfirmCheckoutReturnRequest(provider="fatora", params=params)
    )
    pid = back.payment.payment_id
    assert back.payment.state == State.CAPTURED
    await ledger.settles_at(
        {
            FATORA: {("PROVIDER_CLEARING", "KWD"): -2_500},
            "platform": {("ISSUANCE", "KWD"): 2_500, ("ISSUANCE", "COIN"): -250},
            buyer: {("USER", "COIN"): 250},
        }
    )

    # The merchant refunds the order in Fatora's dashboard: no event reaches Hirepay.
    order_id = back.payment.provider_payment_id
    dashboard = await asyncio.to_thread(
        httpx.post, f"{ledger_stack.fatora_url}/_sandbox/orders/{order_id}/refund"
    )
    assert dashboard.status_code == 200, dashboard.text
    await asyncio.sleep(0.5)
    assert (await _payment(jobs_stub, pid, State.CAPTURED)) is not None  # nothing told us

    # Two rounds at once (the auditor's and a report on demand), then another: booked once.
    rounds = await asyncio.gather(_reconcile(jobs_stub), _reconcile(jobs_stub))
    again = await _reconcile(jobs_stub)
    for reply in (*rounds, again):
        assert [m for m in reply.mismatches if m.payment_id == pid] == []
    got = await _payment(jobs_stub, pid, State.REFUNDED)
    assert got is not None and (got.captured_minor, got.refunded_minor) == (2_500, 2_500)
    refund_id = f"{order_id}:refund"
    assert await _refunds(ledger_stack, pid) == [
        (f"provider:{refund_id}", "SUCCEEDED", 2_500, refund_id)
    ]
    # Cash back through Fatora's clearing and the 250 coins taken back: all nets to zero.
    await ledger.settles_at({})
    [record] = await _refund_ids(ledger_stack, pid)
    assert await _transfer(ledger_stack, f"payment:{pid}:refund:{record}") is not None
    assert await _published(jobs_stub, pid) == ["payment.captured", "payment.refunded"]

    # The ledger auditor finds every refund booked and revenue equal to fees minus refunds.
    async def clean() -> bool:
        return await _findings(jobs_stub) == {}

    await wait_for(clean, timeout=20)
