"""A charged posting attempt forgets its user's expired attempts through
`ix_posting_rate_attempts_charged` even when the table's statistics were gathered while one user
had made every attempt (PAY-14, issue 13, jobs migration 0014): the generic plan that a pooled
connection keeps, of the attempt's statement and of a posting's first statement alike (the same
`forget` CTE), reads the index, where without the migration it scanned every user's attempts.
On a new database, before any ANALYZE, it reads the index too (the migration leaves an empty
table unanalysed). The migration goes down and up cleanly."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from alembic import command
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hirepay_dev.pg import libpq_url
from hirepay_dev.services import SPECS
from hirepay_platform.db import create_engine, make_session_factory
from hirepay_platform.migrations import alembic_config
from jobs.adapters.unit_of_work import SqlJobsUnitOfWork
from jobs.service_layer.handlers.rate_limits import ATTEMPT_MEMORY

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
# The benchmark's shape: its one-worker case charges some hundreds of attempts of one user before
# the first ANALYZE, then 31 more users post.
FIRST_USER_ATTEMPTS = 2_000
LATER_USERS, LATER_ATTEMPTS = 31, 60
INDEX = "ix_posting_rate_attempts_charged"


@pytest.fixture(scope="module")
async def database(make_service_database) -> str:
    return await asyncio.to_thread(make_service_database, "jobs")


@pytest.fixture
async def sessions(database: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database)
    try:
        yield make_session_factory(engine)
    finally:
        await engine.dispose()


async def _analyzed_with_one_user(url: str) -> None:
    """Attempts of one user, ANALYZE (as autovacuum would), then the other users' attempts."""
    connection = await asyncpg.connect(libpq_url(url))
    try:
        await connection.execute("TRUNCATE posting_rate_attempts")
        insert = """
            INSERT INTO posting_rate_attempts (user_id, attempt_id, charged_at)
            SELECT 'user-' || $1::int, 'att-' || $1::int || '-' || n,
                   $3::timestamptz - n * interval '10 seconds'
            FROM generate_series(1, $2::int) AS n
        """
        await connection.execute(insert, 0, FIRST_USER_ATTEMPTS, NOW)
        await connection.execute("ANALYZE posting_rate_attempts")
        for user in range(1, LATER_USERS + 1):
            await connection.execute(insert, user, LATER_ATTEMPTS, NOW)
    finally:
        await connection.close()


async def _attempt_sql(sessions, round_trips) -> str:
    """The statement of one attempt (a later user's), as the repository sends it."""
    round_trips.sent.clear()
    async with SqlJobsUnitOfWork(sessions) as uow:
        await uow.rate_limits.take(
            "user-7",
            f"att-{uuid.uuid4().hex}",
            limit=1_000,
            window_seconds=60,
            now=NOW,
            forget_before=NOW - ATTEMPT_MEMORY,
        )
    return next(
        sql
        for kind, sql in round_trips.sent
        if kind == "statement" and "DELETE FROM posting_rate_attempts" in sql
    )


async def _generic_plan(url: str, sql: str) -> str:
    """The generic plan of `sql` (what a pooled connection runs from its sixth run on), with the
    table's statistics and every scan allowed; parameters are typed by the statement's casts."""
    connection = await asyncpg.connect(libpq_url(url), statement_cache_size=0)
    try:
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        await connection.execute(f"PREPARE measured AS {sql}")
        count = max(int(n) for n in re.findall(r"\$(\d+)", sql))
        rows = await connection.fetch(f"EXPLAIN EXECUTE measured({', '.join(['NULL'] * count)})")
        return "\n".join(r[0] for r in rows)
    finally:
        await connection.close()


def _forget_scan(plan: str) -> str:
    """The scan of posting_rate_attempts under the plan's `Delete on posting_rate_attempts` node
    (after the delete's InitPlan, the EXISTS on what the attempt charged)."""
    lines = plan.splitlines()
    at = next(i for i, line in enumerate(lines) if "Delete on posting_rate_attempts" in line)
    i = next(
        i
        for i in range(at + 1, len(lines))
        if re.search(r"Scan.* on posting_rate_attempts", lines[i])
    )
    scan = lines[i].strip()
    if "Bitmap Heap Scan" in scan:
        # A bitmap heap scan reads the rows its Bitmap Index Scan (the next scan line) found:
        # the two together are the read (the planner picks it on some statistics).
        scan += " <- " + next(line.strip() for line in lines[i + 1 :] if "Index Scan" in line)
    return scan


async def test_the_forgetting_reads_the_index_after_a_one_user_analyze(
    database, sessions, round_trips
):
    await _analyzed_with_one_user(database)
    sql = await _attempt_sql(sessions, round_trips)
    scan = _forget_scan(await _generic_plan(database, sql))
    assert INDEX in scan and "Seq Scan" not in scan, scan


async def test_a_postings_first_statement_forgets_through_the_index(database):
    """The posting's first statement carries the same `forget` CTE (repositories._AttemptCtes);
    its generic plan, on the same statistics, reads the index too."""
    await _analyzed_with_one_user(database)
    # The forget CTE's own shape, as the posting statement renders it.
    sql = (
        "WITH forget AS (DELETE FROM posting_rate_attempts "
        "WHERE posting_rate_attempts.user_id = $1::VARCHAR "
        "AND posting_rate_attempts.charged_at < $2::TIMESTAMP WITH TIME ZONE) SELECT 1"
    )
    scan = _forget_scan(await _generic_plan(database, sql))
    assert INDEX in scan and "Seq Scan" not in scan, scan


async def test_a_new_database_forgets_through_the_index_before_any_analyze(
    make_service_database, round_trips
):
    """The benchmark's first case: one user's few hundred attempts on a new database that no
    ANALYZE has seen yet (autovacuum had not come round)."""
    url = await asyncio.to_thread(make_service_database, "jobs")
    connection = await asyncpg.connect(libpq_url(url))
    try:
        analysed = await connection.fetchval(
            "SELECT reltuples >= 0 FROM pg_class WHERE relname = 'posting_rate_attempts'"
        )
        assert not analysed
        await connection.execute(
            """
            INSERT INTO posting_rate_attempts (user_id, attempt_id, charged_at)
            SELECT 'user-0', 'att-' || n, $1::timestamptz - n * interval '10 seconds'
            FROM generate_series(1, 300) AS n
            """,
            NOW,
        )
    finally:
        await connection.close()
    engine = create_engine(url)
    try:
        sql = await _attempt_sql(make_session_factory(engine), round_trips)
    finally:
        await engine.dispose()
    scan = _forget_scan(await _generic_plan(url, sql))
    assert INDEX in scan and "Seq Scan" not in scan, scan


async def test_migration_0014_goes_down_and_up(database, sessions, round_trips):
    config = alembic_config(SPECS["jobs"].migrations, database)
    await asyncio.to_thread(command.downgrade, config, "0013")
    try:
        await _analyzed_with_one_user(database)
        sql = await _attempt_sql(sessions, round_trips)
        # Without the setting the generic plan scans every user's attempts.
        assert "Seq Scan" in _forget_scan(await _generic_plan(database, sql))
    finally:
        await asyncio.to_thread(command.upgrade, config, "head")
    await _analyzed_with_one_user(database)
    sql = await _attempt_sql(sessions, round_trips)
    assert INDEX in _forget_scan(await _generic_plan(database, sql))
    # The attempts a posting forgets are still forgotten: past the horizon, the user's only.
    connection = await asyncpg.connect(libpq_url(database))
    try:
        await connection.execute(
            "INSERT INTO posting_rate_attempts VALUES ('user-7', 'old', $1), ('user-8', 'old', $1)",
            NOW - ATTEMPT_MEMORY - timedelta(seconds=1),
        )
        await _attempt_sql(sessions, round_trips)
        left = await connection.fetch(
            "SELECT user_id FROM posting_rate_attempts WHERE attempt_id = 'old' ORDER BY 1"
        )
        assert [r["user_id"] for r in left] == ["user-8"]
    finally:
        await connection.close()
