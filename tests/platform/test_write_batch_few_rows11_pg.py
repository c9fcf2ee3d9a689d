"""A few rows of one INSERT in the write batch go bound one by one (one-row SELECTs joined by
UNION ALL), not as arrays (issue 13), on real PostgreSQL, through SQLAlchemy (an ORM session) and
as hot statements (a CoreSession): every value is written exactly as the one-row and the array
shapes write it, rows keep their order, insert-first and a guard work as before, and no array
parameter is sent, so asyncpg checks no element of one against abstract classes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    bindparam,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB

from hirepay_platform import write_batch
from hirepay_platform.db import Database, execute_alone
from tests.support.asyncpg_checks import asyncpg_abstract_checks
from tests.support.pg_schema import database_with
from tests.support.python_calls import profiled
from tests.support.write_batch_units import UNITS, started

META = MetaData()
THINGS = Table(
    "few_things",
    META,
    Column("id", String(32), primary_key=True),
    Column("name", Text, nullable=True),
    Column("count", BigInteger, nullable=False),
    Column("flag", Boolean, nullable=False),
    Column("amount", Numeric(20, 4), nullable=True),
    Column("doc", JSONB, nullable=True),
    Column("at", DateTime(timezone=True), nullable=True),
)
LINES = Table(
    "few_lines",
    META,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("thing_id", String(32), nullable=False),
    Column("line", Text, nullable=False),
    Column("details", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Values of every kind the columns take, each row different (None, JSON of every type, a JSON
# list, which must stay one element, exact decimals, microseconds and a non-UTC offset).
_AT = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC) + timedelta(hours=1)
_VALUES = [
    {"name": "é\"'", "count": 2**40, "flag": True, "amount": Decimal("12.3400"), "doc": {"a": [1]}},
    {"name": None, "count": -1, "flag": False, "amount": None, "doc": [1, "two", None]},
    {"name": "", "count": 0, "flag": True, "amount": Decimal("-0.0001"), "doc": "text"},
    {"name": "x" * 300, "count": 7, "flag": False, "amount": Decimal("1e10"), "doc": None},
    {"name": "five", "count": 5, "flag": True, "amount": Decimal("5"), "doc": 5},
]


@pytest.fixture(scope="module")
async def db_url(make_database) -> str:
    return await database_with(make_database, "platform_few_rows", META)


@pytest.fixture(params=sorted(UNITS))
async def db(request, db_url: str) -> AsyncIterator[Database[Any]]:
    async with started(db_url, request.param, "few_things") as database:
        yield database


def _thing(key: str, i: int) -> dict[str, Any]:
    return {"id": f"{key}-{i}", **_VALUES[i % len(_VALUES)], "at": _AT + timedelta(days=i)}


async def _things(db: Database[Any], key: str) -> list[dict[str, Any]]:
    async with db.engine.connect() as conn:  # type: ignore[union-attr]
        query = select(THINGS).where(THINGS.c.id.like(f"{key}-%")).order_by(THINGS.c.id)
        return [dict(r._mapping) for r in await conn.execute(query)]


async def _lines(db: Database[Any], key: str) -> list[Any]:
    async with db.engine.connect() as conn:  # type: ignore[union-attr]
        query = select(LINES).where(LINES.c.thing_id == key).order_by(LINES.c.id)
        return list(await conn.execute(query))


_WAYS = ("one", "few", "arr")  # one row per INSERT, the few rows' shape, arrays


@pytest.mark.parametrize("n", range(2, write_batch._FEW_ROWS + 1))
async def test_a_few_rows_are_written_as_one_row_and_arrays_write_them(db, n: int) -> None:
    """Each value as the one-row INSERT and the arrays write it (the same rows written the
    three ways, read back equal); JSON kinds kept (a list is one value, a string a string)."""
    keys = {way: f"{way}{uuid.uuid4().hex[:8]}" for way in _WAYS}
    rows = {way: [_thing(keys[way], i) for i in range(n)] for way in _WAYS}
    async with db.uow() as uow:
        for row in rows["one"]:
            await uow.batch.insert(THINGS, [row])
            await uow.batch.flush()
        await uow.batch.insert(THINGS, rows["few"])
        await uow.commit()
    old = write_batch._FEW_ROWS
    write_batch._FEW_ROWS = 1  # the same rows as arrays
    try:
        async with db.uow() as uow:
            await uow.batch.insert(THINGS, rows["arr"])
            await uow.commit()
    finally:
        write_batch._FEW_ROWS = old
    written = {}
    for way, given in rows.items():
        written[way] = [
            {k: v for k, v in r.items() if k != "id"} for r in await _things(db, keys[way])
        ]
        assert written[way] == [{k: v for k, v in r.items() if k != "id"} for r in given]
    assert written["one"] == written["few"] == written["arr"]


async def test_a_few_rows_keep_their_order_and_constants(db) -> None:
    key = f"order-{uuid.uuid4().hex[:8]}"
    async with db.uow() as uow:
        await uow.batch.insert(
            LINES,
            [{"thing_id": key, "line": f"l{i}", "details": {"i": i}} for i in range(3)],
            {"created_at": func.now()},
        )
        await uow.batch.insert(
            LINES,
            [{"thing_id": key, "line": f"m{i}", "details": [i]} for i in range(2)],
            {"created_at": func.now()},
        )
        started = (await uow.batched.execute(select(func.now()))).scalar_one()
        await uow.commit()
    lines = await _lines(db, key)
    assert [(r.line, r.details) for r in lines] == [
        ("l0", {"i": 0}),
        ("l1", {"i": 1}),
        ("l2", {"i": 2}),
        ("m0", [0]),
        ("m1", [1]),
    ]
    assert {r.created_at for r in lines} == {started}


async def test_a_few_rows_insert_first_keeps_existing_rows(db) -> None:
    key = f"first-{uuid.uuid4().hex[:8]}"
    async with db.uow() as uow:
        await uow.batch.insert(THINGS, [{**_thing(key, 1), "name": "kept"}])
        await uow.commit()
    async with db.uow() as uow:
        rows = [{**_thing(key, i), "name": "new"} for i in range(3)]
        await uow.batch.insert(THINGS, rows, first=True)
        await uow.commit()
    assert [r["name"] for r in await _things(db, key)] == ["new", "kept", "new"]


# A guard: the row the writes depend on, if it still holds what was seen.
_STILL = select(THINGS.c.id).where(
    THINGS.c.id == bindparam("g_id"), THINGS.c.count == bindparam("g_count")
)


async def test_a_guarded_flush_of_a_few_rows_writes_all_or_nothing(db) -> None:
    key = f"guard-{uuid.uuid4().hex[:8]}"
    async with db.uow() as uow:
        await uow.batch.insert(THINGS, [{**_thing(key, 0), "count": 1}])
        await uow.commit()
    for seen, expected in ((0, False), (1, True)):
        async with db.uow() as uow:
            lines = [{"thing_id": key, "line": f"{seen}.{i}", "details": {}} for i in range(3)]
            await uow.batch.insert(LINES, lines, {"created_at": func.now()})
            held = await uow.batch.flush_if(
                _STILL, {"g_id": f"{key}-0", "g_count": seen}, execute_alone
            )
            assert held is expected
    assert [r.line for r in await _lines(db, key)] == ["1.0", "1.1", "1.2"]


async def test_a_few_rows_send_no_array_for_asyncpg_to_check(db) -> None:
    """The audit lines' shape (two rows, text, null and JSON columns): no abstract-class check
    of an array's elements (asyncpg makes one or two Python calls per element)."""
    key = f"abc-{uuid.uuid4().hex[:8]}"

    def lines(i: int) -> list[dict[str, Any]]:
        return [{"thing_id": key, "line": f"{i}.{j}", "details": {"j": j}} for j in range(2)]

    async def flush(i: int) -> None:
        async with db.uow() as uow:
            await uow.batch.insert(LINES, lines(i), {"created_at": func.now()})
            await uow.commit()

    await flush(0)  # the statement compiled and prepared
    with profiled() as profile:
        await flush(1)
    checks = asyncpg_abstract_checks(profile)
    assert checks == 0, checks
    assert [r.line for r in await _lines(db, key)] == ["0.0", "0.1", "1.0", "1.1"]
