"""The settlement stream's read (`outbox_after`, every poll of every consumer) reads the events
after the consumer's position through an index, on a fresh database too (issue 13): its query
runs inside a plpgsql function, planned on the outbox as it looked then (no statistics on a
fresh database), and with `subsystem = only_subsystem` in its filter PostgreSQL chose a
sequential scan and a sort of every event ever published, on every poll, as the bench's
auto_explain showed (the jobs consumer's reads grew with the outbox). Counted in the reading
transaction's own statistics: no sequential scan of the outbox for a consumer of one subsystem
(as every consumer is: jobs reads "jobs"), nor for a read of every subsystem (its one condition,
`ix_outbox_position`). Since payments migration 0014 every poll runs the function's generic
plan, fresh database or not: these polls pin that plan too."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest

from hirepay_dev.pg import libpq_url

# More polls than PostgreSQL's five custom plans, so the plan it keeps is measured too.
POLLS = 8
EVENTS = 400


async def _fresh_outbox(make_service_database: Callable[[str], str]) -> asyncpg.Connection:
    url = await asyncio.to_thread(make_service_database, "payments")
    connection = await asyncpg.connect(libpq_url(url))
    # Published events of two subsystems, as the publisher numbers them; never analyzed.
    await connection.execute(
        "INSERT INTO outbox (event_id, type, subsystem, snapshot, occurred_at, position) "
        "SELECT 'evt_' || n, 'payment.captured', CASE WHEN n % 4 = 0 THEN 'marketplace' "
        "ELSE 'jobs' END, '{}'::jsonb, now(), nextval('outbox_position_seq') "
        "FROM generate_series(1, $1) AS n",
        EVENTS,
    )
    return connection


@pytest.mark.parametrize("subsystem", ["jobs", "marketplace", ""])
async def test_a_stream_read_scans_no_outbox_row_sequentially(make_service_database, subsystem):
    connection = await _fresh_outbox(make_service_database)
    reading = connection.transaction()  # rolled back: nothing of the test stays
    await reading.start()
    try:
        after = EVENTS - 20
        for _ in range(POLLS):
            rows = await connection.fetch(
                "SELECT * FROM outbox_after($1, $2, $3)", after, 100, subsystem
            )
            assert rows and all(r["position"] > after for r in rows)
            if subsystem:
                assert {r["subsystem"] for r in rows} == {subsystem}
            positions = [r["position"] for r in rows]
            assert positions == sorted(positions)
        scans = await connection.fetchrow(
            "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'outbox'"
        )
        assert scans["seq_scan"] == 0 and scans["idx_scan"] >= POLLS, dict(scans)
    finally:
        await reading.rollback()
        await connection.close()
