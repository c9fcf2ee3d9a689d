"""The database readiness check keeps one connection of its own (OPS-2, issue 13), on real
PostgreSQL: repeated checks open no new session; a kept connection the server ended, or a check
cancelled by its timeout, is replaced, and the check still says the truth about the server: up
while it is reachable, down (raising) while it is not, up again when it returns. Without the
kept connection (one per check, closed after it) no `hirepay` session outlives a check."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest

from hirepay_dev import pg
from hirepay_platform.db import database_check
from tests.support.pg_proxy import PostgresProxy


def _admin(url: str) -> str:
    """The server's `postgres` database: the test's own sessions never count on the one checked."""
    return pg.libpq_url(pg.with_database(url, "postgres"))


async def _backends(url: str, database: str) -> list[int]:
    """Pids of the `hirepay` sessions on `database`: the check's own."""
    admin = await asyncpg.connect(_admin(url))
    try:
        rows = await admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'hirepay'",
            database,
        )
        return sorted(row["pid"] for row in rows)
    finally:
        await admin.close()


@pytest.fixture
def proxy(pg_server_url: str) -> Iterator[PostgresProxy]:
    proxy = PostgresProxy(pg_server_url).start()
    yield proxy
    proxy.close()


async def test_checks_reuse_one_connection_and_replace_one_the_server_ended(make_database) -> None:
    url = make_database("readiness_kept")
    database = url.split("?", 1)[0].rsplit("/", 1)[1]
    check = database_check(url)

    await check()
    first = await _backends(url, database)
    assert len(first) == 1
    for _ in range(5):
        await check()
        # The same backend each time: a check opens no session of its own.
        assert await _backends(url, database) == first

    # The server ends the kept connection (as a restart would): the check still passes, now on a
    # new one, instead of reporting a reachable database down.
    admin = await asyncpg.connect(_admin(url))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", first[0])
    finally:
        await admin.close()
    await check()
    second = await _backends(url, database)
    assert len(second) == 1 and second != first


async def test_a_cancelled_check_leaves_no_connection_in_use(make_database) -> None:
    url = make_database("readiness_cancel")
    database = url.split("?", 1)[0].rsplit("/", 1)[1]
    check = database_check(url)
    await check()
    before = await _backends(url, database)

    # The watcher's timeout cancels a check mid-statement: that connection is never used again.
    task = asyncio.ensure_future(check())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await check()
    after = await _backends(url, database)
    assert len(after) == 1 and after != before


async def test_the_check_follows_the_server_through_an_outage(
    make_database, proxy: PostgresProxy
) -> None:
    url = make_database("readiness_outage")
    check = database_check(proxy.url_for(url))
    await check()

    proxy.cut()  # the kept connection drops and new ones are refused
    with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
        await check()
    with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
        await check()

    proxy.restore()
    await check()
    await check()
