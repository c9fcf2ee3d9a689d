"""The provider reconciliation's pass through paid plan purchases at Fatora (which sends no refund
event) is durable (payments 0024, OPS-3), and what it finds is in ReconcileProvider's answer,
through the real payments process on PostgreSQL, the real wallet and the Fatora sandbox: a
`kill -9` between two rounds and the restarted process continues the pass where it was (a
purchase refunded at Fatora's dashboard in the pass's second batch is found by the first round
after the restart, not a whole pass later); two rounds at once book it once and their answers
say so; its money is back through Fatora's clearing and its credits revoked on the ledger."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator

import asyncpg
import pytest

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay_dev.pg import libpq_url
from tests.payments.ledger.conftest import LedgerStack, ledger_stack_with
from tests.payments.ledger.test_fatora_purchase_refunds_plans15 import (
    CANDIDATES,
    JOBS,
    PRICE,
    _audit,
    _dashboard_refund,
    _paid_through_fatora,
    _transaction,
)
from tests.payments.ledger.test_ledger_bookings import FATORA, Ledger, _findings, _transfer
from tests.support.waiting import wait_for

PER_ROUND = 2  # the pass's batch a round; the window of one (the newest purchase)
PURCHASES = 5


@pytest.fixture(scope="module")
def ledger_stack(make_service_database: Callable[[str], str]) -> Iterator[LedgerStack]:
    """The ledger stack of this module, its reconciliation reading two purchases of the pass a
    round."""
    yield from ledger_stack_with(
        make_service_database, PAYMENTS_RECONCILE_SWEEP_PER_ROUND=str(PER_ROUND)
    )


async def _reconcile(jobs_stub) -> pb.ReconcileProviderResponse:  # type: ignore[no-untyped-def]
    """A round whose window is the newest purchase: the others are the pass's."""
    return await jobs_stub.ReconcileProvider(pb.ReconcileProviderRequest(limit=1), timeout=10)


async def _pass_order(stack: LedgerStack) -> list[str]:
    """The paid purchases in the pass's order (updated_at, id)."""
    conn = await asyncpg.connect(libpq_url(stack.payments_db))
    try:
        rows = await conn.fetch(
            "SELECT id FROM transactions WHERE status = 'SUCCESS' ORDER BY updated_at, id"
        )
    finally:
        await conn.close()
    return [r[0] for r in rows]


async def _pass_row(stack: LedgerStack) -> list[tuple[str, str | None]]:
    conn = await asyncpg.connect(libpq_url(stack.payments_db))
    try:
        rows = await conn.fetch("SELECT provider, after_id FROM purchase_reconciliation_sweeps")
    finally:
        await conn.close()
    return [(r[0], r[1]) for r in rows]


async def test_a_killed_process_continues_the_pass_and_its_twins_book_the_find_once(
    ledger_stack: LedgerStack, jobs_stub
) -> None:
    buyers: dict[str, str] = {}  # transaction id -> company
    for _ in range(PURCHASES):
        company = f"company-{uuid.uuid4().hex[:12]}"
        txn, _ = await _paid_through_fatora(ledger_stack, jobs_stub, company)
        buyers[txn.transaction_id] = company
    order = await _pass_order(ledger_stack)
    assert sorted(order) == sorted(buyers)
    # The fourth oldest: in the pass's second batch, and not the window's (the newest).
    target = order[3]
    ledger = Ledger(ledger_stack, FATORA, "platform", *buyers.values())  # every purchase booked
    await _dashboard_refund(ledger_stack, target)

    first = await _reconcile(jobs_stub)
    # The window's newest and the pass's first batch read: nothing refunded among them.
    assert (first.purchases_checked, first.purchase_refunds_found) == (1 + PER_ROUND, 0)
    assert list(first.purchase_refunds_booked) == []
    assert first.purchases_unreadable == 0
    assert await _pass_row(ledger_stack) == [("fatora", order[1])]  # durable: past the batch
    assert (await _transaction(jobs_stub, target)).status == pb.Transaction.SUCCESS

    ledger_stack.payments.kill()  # kill -9: nothing of the process's memory survives
    await asyncio.to_thread(ledger_stack.payments.restart)

    # The restarted process's first rounds, two at once: the pass's second batch, where it was.
    answers = list(await asyncio.gather(_reconcile(jobs_stub), _reconcile(jobs_stub)))
    booked = [b for a in answers for b in a.purchase_refunds_booked]
    assert [b.transaction_id for b in booked] == [target], answers  # found, and booked once
    (one,) = booked
    assert (one.provider, one.amount_minor, one.currency) == ("fatora", PRICE, "USD")
    assert one.refunded_in_full
    # The round that booked it found it; a twin that read it before the booking found it too
    # (and booked nothing), one that read the purchases after it did not see it paid.
    assert 1 <= sum(a.purchase_refunds_found for a in answers) <= 2, answers
    assert all(a.purchases_unreadable == 0 for a in answers)
    assert (await _transaction(jobs_stub, target)).status == pb.Transaction.REFUNDED
    # Every other purchase still paid.
    for transaction_id in order:
        if transaction_id != target:
            got = await _transaction(jobs_stub, transaction_id)
            assert got.status == pb.Transaction.SUCCESS, transaction_id
    # The target's money back out of revenue through Fatora's clearing, its buyer's unused
    # credits revoked: once, and nobody else's.
    await ledger.settles_at(
        {
            FATORA: {("PROVIDER_CLEARING", "USD"): PRICE},
            "platform": {
                ("PLATFORM_REVENUE", "USD"): -PRICE,
                ("ISSUANCE", "JOB_CREDIT"): JOBS,
                ("ISSUANCE", "CANDIDATE_CREDIT"): CANDIDATES,
            },
            buyers[target]: {
                ("USER", "JOB_CREDIT"): -JOBS,
                ("USER", "CANDIDATE_CREDIT"): -CANDIDATES,
            },
        }
    )
    settled = await asyncio.to_thread(ledger.changes)
    # Further rounds (the pass's end, and the next pass) find nothing more to book.
    for _ in range(3):
        again = await _reconcile(jobs_stub)
        assert list(again.purchase_refunds_booked) == []
    await asyncio.sleep(0.5)  # the booking worker's further rounds book nothing more
    assert await asyncio.to_thread(ledger.changes) == settled
    assert await _transfer(ledger_stack, f"payment:{target}:refund:full") is not None
    trail = await _audit(ledger_stack, target)
    assert [a for a in trail if a[2] == "REFUNDED"] == [("refund", "reconciliation", "REFUNDED")]

    async def clean() -> bool:
        return await _findings(jobs_stub) == {}

    await wait_for(clean, timeout=20)
