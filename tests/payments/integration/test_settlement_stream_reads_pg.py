"""The settlement stream's read (`outbox_after`, every poll of every consumer) reads the events
after the consumer's position through an index, on a fresh database too (issue 13): its query
runs inside a plpgsql function, planned on the outbox as it looked then (no statistics on a
fresh database), and with `subsystem = only_subsystem` in its filter PostgreSQL chose a
sequential scan and a sort of every event ever published, on every poll, as the bench's
auto_explain showed (the jobs consumer's reads grew with the outbox). Counted in the reading
transaction's own statistics: no sequential scan of the outbox for a consumer of one subsystem
(as every consumer is: jobs reads "jobs"), nor for a read of every subsystem (its one condition,
`ix_outbox_stream`). Since payments migration 0014 every poll runs the function's generic
plan, fresh database or not: these polls pin that plan too. Since 0020 the events are written
once, by writers in transactions of their own (`writer_xid`), and read in their writers' order
(`ix_outbox_subsystem_stream`, `ix_outbox_stream`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest

from hirepay_dev.pg import libpq_url
from tests.support.payments_helpers import until_streamed

# More polls than PostgreSQL's five custom plans, so the plan it keeps is measured too.
POLLS = 8
EVENTS = 400


async def _fresh_outbox(make_service_database: Callable[[str], str]) -> asyncpg.Connection:
    url = await asyncio.to_thread(make_service_database, "payments")
    connection = await asyncpg.connect(libpq_url(url))
    # Events of two subsystems, as writers write them (ten a transaction); never analyzed.
    for first in range(1, EVENTS + 1, 10):
        await connection.execute(
            "INSERT INTO outbox (event_id, type, subsystem, snapshot, occurred_at) "
            "SELECT 'evt_' || n, 'payment.captured', CASE WHEN n % 4 = 0 THEN 'marketplace' "
            "ELSE 'jobs' END, '{}'::jsonb, now() FROM generate_series($1, $1 + 9) AS n",
            first,
        )

    await until_streamed(connection, EVENTS)
    return connection


@pytest.mark.parametrize("subsystem", ["jobs", "marketplace", ""])
async def test_a_stream_read_scans_no_outbox_row_sequentially(make_service_database, subsystem):
    connection = await _fresh_outbox(make_service_database)
    reading = connection.transaction()  # rolled back: nothing of the test stays
    await reading.start()
    try:
        stream = await connection.fetch("SELECT * FROM outbox_after(0, $1, '')", EVENTS)
        assert len(stream) == EVENTS
        after = stream[EVENTS - 21]["position"]
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
