"""The settlement stream's read keeps one generic plan per connection (payments migration 0014,
issue 13): `outbox_after()` runs with `plan_cache_mode = force_generic_plan`, so a poll no longer
plans its read afresh; the read still goes by index on a fresh database, every poll a generic
plan (test_settlement_stream_reads_pg.py), and returns the same events in the same order as the
read planned each time. Migration 0014 goes down and up again cleanly (API-5: the stream's
order and content are unchanged), and so does 0020 on the way (the events written since, in
their writers' order, keep their cursors as positions: the same reads from the same cursors)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest
from alembic import command

from hirepay_dev.pg import libpq_url
from hirepay_dev.services import SPECS
from hirepay_platform.migrations import alembic_config
from tests.support.payments_helpers import until_streamed

EVENTS = 300


async def _settings(connection: asyncpg.Connection) -> list[str]:
    config = await connection.fetchval(
        "SELECT proconfig FROM pg_proc WHERE proname = 'outbox_after'"
    )
    return list(config or [])


async def _reads(
    connection: asyncpg.Connection, froms: list[int]
) -> dict[str, list[tuple[int, str]]]:
    """Every subsystem's polls from several positions: (position, event id) in order."""
    out: dict[str, list[tuple[int, str]]] = {}
    for subsystem in ("", "jobs", "marketplace"):
        got: list[tuple[int, str]] = []
        for after in froms:
            rows = await connection.fetch(
                "SELECT * FROM outbox_after($1, $2, $3)", after, 40, subsystem
            )
            positions = [r["position"] for r in rows]
            assert positions == sorted(positions) and all(p > after for p in positions)
            assert all(r["subsystem"] == subsystem for r in rows) or not subsystem
            got += [(r["position"], r["event_id"]) for r in rows]
        out[subsystem] = got
    return out


@pytest.fixture
async def published(make_service_database: Callable[[str], str]):
    url = await asyncio.to_thread(make_service_database, "payments")
    connection = await asyncpg.connect(libpq_url(url))
    # Events of two subsystems, as writers write them (a few a transaction).
    for first in range(1, EVENTS + 1, 6):
        await connection.execute(
            "INSERT INTO outbox (event_id, type, subsystem, snapshot, occurred_at) "
            "SELECT 'evt_' || n, 'payment.captured', CASE WHEN n % 3 = 0 THEN 'marketplace' "
            "ELSE 'jobs' END, '{}'::jsonb, now() FROM generate_series($1, least($1 + 5, $2)) n",
            first,
            EVENTS,
        )

    await until_streamed(connection, EVENTS)
    try:
        yield url, connection
    finally:
        await connection.close()


async def test_the_stream_read_runs_with_a_generic_plan(published) -> None:
    _, connection = published
    assert "plan_cache_mode=force_generic_plan" in await _settings(connection)


async def test_migration_0014_goes_down_and_up_with_the_same_reads(published) -> None:
    url, connection = published
    stream = [
        r["position"]
        for r in await connection.fetch("SELECT * FROM outbox_after(0, $1, '')", EVENTS)
    ]
    assert len(stream) == EVENTS
    froms = [0, stream[16], stream[EVENTS // 2], stream[EVENTS - 4], stream[-1]]
    with_generic = await _reads(connection, froms)
    assert len(with_generic[""]) == 40 + 40 + 40 + 3
    config = alembic_config(SPECS["payments"].migrations, url)
    await asyncio.to_thread(command.downgrade, config, "0013")
    fresh = await asyncpg.connect(libpq_url(url))  # a new backend: no plan of the function cached
    try:
        assert await _settings(fresh) == []
        assert await _reads(fresh, froms) == with_generic
    finally:
        await fresh.close()
    await asyncio.to_thread(command.upgrade, config, "head")
    assert "plan_cache_mode=force_generic_plan" in await _settings(connection)
    again = await asyncpg.connect(libpq_url(url))
    try:
        assert await _reads(again, froms) == with_generic
    finally:
        await again.close()
