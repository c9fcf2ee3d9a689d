"""The provider reconciliation's read of the most recently changed payments goes through
`ix_payments_updated_at` (issue 13): the consistency auditor asks for it every minute, and
without the index every payment ever made was read and sorted to keep the newest few. Planned
generically with sequential scans off: a plan that cannot use the index still shows its scan
and its sort."""

from __future__ import annotations

import re

import asyncpg

from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from tests.support.pg_plans import generic_plan


async def test_recently_changed_payments_are_read_through_their_index(
    database_url, sessions, round_trips
):
    round_trips.sent.clear()
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        await uow.payments.recently_changed(100)
    read = next(sql for _, sql in round_trips.sent if "FROM payments ORDER BY" in sql)

    connection = await asyncpg.connect(
        re.sub(r"^postgresql\+\w+://", "postgresql://", database_url)
    )
    try:
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        await connection.execute("SET enable_seqscan = off")
        plan = await generic_plan(connection, read)
    finally:
        await connection.close()
    assert "Index Scan Backward using ix_payments_updated_at" in plan, plan
    assert "Sort" not in plan and "Seq Scan" not in plan, plan
