"""The ledger auditor reads the bookings it expects by kind — disputes' balance transactions,
refunds that failed after they succeeded, purchases' refunds in part — in one statement through
their own partial index (payments migration 0021; OPS-3, issue 13): planned generically with
sequential scans off, it never scans `credit_grants` (a booking per posting), and a posting's
booking (kind `capture`) writes nothing into that index."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from tests.payments.integration.test_partial_indexes_pg import (
    _EMPTY_INDEX_BYTES,
    _index_bytes,
    _plan,
    _write_card_payments,
)


async def test_a_posting_booking_stays_out_of_the_audited_kinds_index(database_url, sessions):
    before = await _index_bytes(database_url, "ix_credit_grants_audited")
    assert before == {"ix_credit_grants_audited": _EMPTY_INDEX_BYTES}
    await _write_card_payments(sessions, 20)  # each with its capture's booking
    assert await _index_bytes(database_url, "ix_credit_grants_audited") == before


async def test_the_auditors_read_by_kind_goes_through_its_partial_index(
    database_url, sessions, round_trips
):
    await _write_card_payments(sessions, 5)
    round_trips.sent.clear()
    now = datetime.now(UTC)
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        await uow.credit_grants.expected(now, now - timedelta(minutes=5))
    [sql] = [
        sql
        for kind, sql in round_trips.sent
        if kind == "statement" and "credit_grants.kind IN" in sql
    ]
    plan = await _plan(database_url, sql)
    assert "ix_credit_grants_audited" in plan, plan
    assert "Seq Scan on credit_grants" not in plan, plan
