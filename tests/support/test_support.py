"""The test support itself: service databases copied from a migrated template are at the head
revision and independent of each other; polling pauses start short and settle at the interval."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

import asyncpg
import pytest
from alembic.script import ScriptDirectory

from hirepay_dev.services import SPECS
from hirepay_platform.migrations import alembic_config
from tests.support.waiting import eventually, pauses, wait_for


async def _fetch(url: str, sql: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetch(sql)
    finally:
        await connection.close()


@pytest.mark.parametrize("name", ["wallet", "payments", "jobs"])
def test_service_databases_are_at_head_and_independent(
    make_service_database: Callable[[str], str], name: str
) -> None:
    first, second = make_service_database(name), make_service_database(name)
    assert first != second
    spec = SPECS[name]
    head = ScriptDirectory.from_config(alembic_config(spec.migrations, first)).get_current_head()
    for url in (first, second):
        rows = asyncio.run(_fetch(url, "SELECT version_num FROM alembic_version"))
        assert [r["version_num"] for r in rows] == [head]
    # A table made in one copy is not in the other (nor in the template they come from).
    asyncio.run(_fetch(first, "CREATE TABLE only_in_first (id int)"))
    third = make_service_database(name)
    for url in (second, third):
        found = asyncio.run(_fetch(url, "SELECT to_regclass('only_in_first') AS t"))
        assert found[0]["t"] is None


def test_pauses_start_at_an_eighth_and_double_up_to_the_interval() -> None:
    assert list(itertools.islice(pauses(0.8), 6)) == [0.1, 0.2, 0.4, 0.8, 0.8, 0.8]


def test_eventually_sees_a_condition_before_one_whole_interval() -> None:
    ready_at = time.monotonic() + 0.05
    start = time.monotonic()
    eventually(lambda: time.monotonic() >= ready_at, timeout=10, interval=2)
    assert time.monotonic() - start < 1.0


def test_eventually_still_fails_after_its_timeout() -> None:
    start = time.monotonic()
    with pytest.raises(AssertionError):
        eventually(lambda: False, timeout=0.3, interval=0.1)
    assert time.monotonic() - start >= 0.3


def test_wait_for_sees_a_condition_before_one_whole_interval() -> None:
    async def scenario() -> float:
        ready_at = time.monotonic() + 0.05
        start = time.monotonic()

        async def probe() -> bool:
            return time.monotonic() >= ready_at

        await wait_for(probe, timeout=10, interval=2)
        return time.monotonic() - start

    assert asyncio.run(scenario()) < 1.0
