"""The bench starts the pay-to-post cases on a quiet server, whatever ran before them: the earlier
cases' stacks gone, their databases vacuumed with no autovacuum worker at work, their dirty pages
checkpointed (`make bench` measured the serial posting after the wallet cases at a p50 of 35.8 ms
against 21-27 ms with `--only posting`)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from hirepay_dev import bench_posting, bench_wallet, pg
from hirepay_dev.benchlib import quiet_server


class StackStarted(Exception):
    """Raised where the posting stack would start: the test looks at the server there."""


async def _dirty_database(make_database: Any) -> tuple[str, str]:
    """A database whose table has dead rows and dirty pages, as a wallet case leaves its own:
    its name and libpq URL."""
    url = pg.libpq_url(make_database("bench_quiet"))
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            "SET synchronous_commit = off;"
            "CREATE TABLE entries (id bigint PRIMARY KEY, amount bigint NOT NULL);"
            "INSERT INTO entries SELECT i, i FROM generate_series(1, 20000) i;"
            "UPDATE entries SET amount = amount + 1;"
        )
    finally:
        await connection.close()
    return url.split("?", 1)[0].rsplit("/", 1)[1], url


async def _state(server_url: str, database: str, url: str) -> dict[str, Any]:
    admin = await asyncpg.connect(pg.libpq_url(pg.with_database(server_url, "postgres")))
    own = await asyncpg.connect(url)
    try:
        return {
            "clients": await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
                "AND backend_type = 'client backend' AND pid <> $2",
                database,
                await own.fetchval("SELECT pg_backend_pid()"),
            ),
            "redo_lsn": await admin.fetchval(
                "SELECT (redo_lsn - '0/0')::bigint FROM pg_control_checkpoint()"
            ),
            "table": dict(
                await own.fetchrow(
                    "SELECT vacuum_count + autovacuum_count AS vacuums, "
                    "analyze_count + autoanalyze_count AS analyzes, n_dead_tup "
                    "FROM pg_stat_user_tables WHERE relname = 'entries'"
                )
            ),
        }
    finally:
        await own.close()
        await admin.close()


async def test_the_posting_cases_start_after_the_earlier_cases_are_quiet(
    pg_server_url, make_database, monkeypatch
):
    """bench_posting.run, before it starts its stack: the wallet cases' database (here a stand-in
    with dead rows, dirty pages and a connection of a stack still closing) has no client left,
    was vacuumed and analyzed, and a checkpoint began after its last write; what was waited for
    is printed."""
    database, url = await _dirty_database(make_database)
    last_write = await _lsn(pg_server_url)
    monkeypatch.setattr(bench_wallet, "DATABASE", database)
    closing = await asyncpg.connect(url)  # the wallet stack's pool, closing as it stops

    async def close_later() -> None:
        await asyncio.sleep(0.5)
        await closing.close()

    closer = asyncio.create_task(close_later())
    seen: dict[str, Any] = {}

    def stack(*_: Any, **__: Any) -> None:
        seen.update(asyncio.run(_state(pg_server_url, database, url)))
        raise StackStarted

    monkeypatch.setattr(bench_posting, "_stack", stack)
    lines: list[str] = []
    try:
        with pytest.raises(StackStarted):
            await bench_posting.run(pg_server_url, lines.append, None, quick=True)
    finally:
        await closer
    assert seen["clients"] == 0
    assert seen["table"]["vacuums"] >= 1 and seen["table"]["analyzes"] >= 1, seen
    assert seen["table"]["n_dead_tup"] == 0, seen
    assert seen["redo_lsn"] >= last_write, (seen["redo_lsn"], last_write)
    (printed,) = [line for line in lines if "quieted in" in line]
    assert f"1 on {database}" in printed
    assert database in printed.split("VACUUM (ANALYZE) ", 1)[1].split(";", 1)[0], printed
    assert "CHECKPOINT wrote" in printed and "GAVE UP" not in printed


async def test_quieting_gives_up_after_its_limit_and_says_so(pg_server_url, make_database):
    """A backend that never closes is waited for no longer than `max_seconds`, and the line says
    the server was not quiet; a database that does not exist is skipped."""
    database, url = await _dirty_database(make_database)
    stuck = await asyncpg.connect(url)
    try:
        quieted = await quiet_server(
            pg_server_url, [database, "hirepay_no_such_db"], max_seconds=0.3
        )
    finally:
        await stuck.close()
    assert quieted.gave_up and quieted.backends == {database: 1}
    assert quieted.vacuumed == (database,)
    assert "GAVE UP" in quieted.line()


async def _lsn(server_url: str) -> int:
    """Where the server's WAL ends now (bytes from its start)."""
    admin = await asyncpg.connect(pg.libpq_url(pg.with_database(server_url, "postgres")))
    try:
        return await admin.fetchval("SELECT (pg_current_wal_lsn() - '0/0')::bigint")
    finally:
        await admin.close()
