"""The consistency auditor's every-round read of the payments still in flight goes through
`ix_payments_not_final` (OPS-3, issue 13, payments migration 0016): on a table of many payments,
nearly all final, its plan (generic, as a cached prepared statement runs it, with the table's
statistics and sequential scans allowed) reads that index, and reads few pages where the same read
without the index walks every payment. The migration goes down and up cleanly, and the read
returns the same payments either way."""

from __future__ import annotations

import asyncio
import re

import asyncpg
from alembic import command
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hirepay_dev.pg import libpq_url
from hirepay_dev.services import SPECS
from hirepay_platform.migrations import alembic_config
from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork

PAYMENTS = 20_000
# Every 100th payment is still in flight, the rest captured, voided or failed.
IN_FLIGHT_EVERY = 100
# The jobs auditor's states (jobs/service_layer/handlers/audit.py _NON_FINAL) and its page.
NOT_FINAL = frozenset({"REQUIRES_ACTION", "PROCESSING", "AUTHORIZED", "UNKNOWN"})
PAGE = 501
INDEX = "ix_payments_not_final"


async def fill_database(connection: asyncpg.Connection) -> None:
    """20,000 payments, every 100th still in flight, the rest final; then ANALYZE."""
    await connection.execute(
        """
        INSERT INTO payments (id, global_tx_id, branch_id, owner_id, amount_minor, currency,
                              method, provider, state, metadata, created_at, updated_at)
        SELECT 'pay_' || lpad(n::text, 8, '0'), 'gtx_' || n, 'payment', 'company-' || n % 50,
               2500, 'USD', 'CARD', 'stripe',
               CASE WHEN n % $2 = 0 THEN (ARRAY['PROCESSING', 'AUTHORIZED', 'REQUIRES_ACTION',
                                                'UNKNOWN'])[1 + n / $2 % 4]
                    ELSE (ARRAY['CAPTURED', 'CAPTURED', 'VOIDED', 'FAILED'])[1 + n % 4] END,
               jsonb_build_object('subsystem', CASE WHEN n % 7 = 0 THEN 'marketplace'
                                                    ELSE 'jobs' END),
               now() - interval '1 day' + n * interval '1 second', now()
        FROM generate_series(1, $1) AS n
        """,
        PAYMENTS,
        IN_FLIGHT_EVERY,
    )
    await connection.execute("ANALYZE payments")


async def _in_flight_ids(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    """Every page of the auditor's read, as payments' ListPayments handler asks for it."""
    ids: list[str] = []
    after = ""
    while True:
        async with SqlPaymentsUnitOfWork(sessions) as uow:
            page = await uow.payments.list_by_states(NOT_FINAL, "jobs", after, PAGE)
        ids += [p.id for p in page]
        if len(page) < PAGE:
            return ids
        after = page[-1].id


async def _read_sql(sessions, round_trips) -> str:
    round_trips.sent.clear()
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        await uow.payments.list_by_states(NOT_FINAL, "jobs", "", PAGE)
    return next(sql for kind, sql in round_trips.sent if kind == "statement" and "payments" in sql)


async def _explain(url: str, sql: str, *, analyze: bool = False) -> str:
    """The generic plan of `sql` (what a cached prepared statement runs), with the table's
    statistics and every scan allowed; with `analyze`, run on the first page, its buffers."""
    connection = await asyncpg.connect(libpq_url(url), statement_cache_size=0)
    try:
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        await connection.execute(f"PREPARE measured AS {sql}")
        params = sorted({int(n) for n in re.findall(r"\$(\d+)", sql)})
        # The first page's parameters: after no id, the metadata key and value of the jobs
        # subsystem, the page (the states are literal: the repository names them).
        assert len(params) == 4, sql
        arguments = f"'', 'subsystem', 'jobs', {PAGE}"
        options = "(ANALYZE, BUFFERS, TIMING OFF) " if analyze else ""
        rows = await connection.fetch(f"EXPLAIN {options}EXECUTE measured({arguments})")
        return "\n".join(r[0] for r in rows)
    finally:
        await connection.close()


def _pages_read(plan: str) -> int:
    """Shared buffers the whole plan touched (its top node's count)."""
    found = re.search(r"Buffers: shared hit=(\d+)(?: read=(\d+))?", plan)
    assert found, plan
    return int(found.group(1)) + int(found.group(2) or 0)


async def test_the_in_flight_read_goes_through_the_not_final_index(
    database_url, sessions, round_trips
):
    sql = await _read_sql(sessions, round_trips)

    plan = await _explain(database_url, sql)
    assert f"using {INDEX}" in plan and "Seq Scan" not in plan, plan
    measured = await _explain(database_url, sql, analyze=True)
    # 172 payments of jobs in flight, each on its own heap page at most, and the index's few
    # pages; without the index the read walks all 20,000 payments (test below).
    assert _pages_read(measured) < 250, measured


async def test_migration_0016_goes_down_and_up_with_the_same_read(
    database_url, sessions, round_trips
):
    expected = [
        f"pay_{n:08d}" for n in range(IN_FLIGHT_EVERY, PAYMENTS + 1, IN_FLIGHT_EVERY) if n % 7
    ]
    assert await _in_flight_ids(sessions) == expected
    with_index = _pages_read(
        await _explain(database_url, await _read_sql(sessions, round_trips), analyze=True)
    )
    config = alembic_config(SPECS["payments"].migrations, database_url)
    await asyncio.to_thread(command.downgrade, config, "0015")
    try:
        sql = await _read_sql(sessions, round_trips)
        plan = await _explain(database_url, sql, analyze=True)
        assert INDEX not in plan, plan
        # Without the index the read filters its way through every payment.
        removed = re.search(r"Rows Removed by Filter: (\d+)", plan)
        assert removed and int(removed.group(1)) > PAYMENTS * 0.9, plan
        assert _pages_read(plan) > 2 * with_index, (with_index, plan)
        assert await _in_flight_ids(sessions) == expected
    finally:
        await asyncio.to_thread(command.upgrade, config, "head")
    sql = await _read_sql(sessions, round_trips)
    assert f"using {INDEX}" in await _explain(database_url, sql)
    assert await _in_flight_ids(sessions) == expected
