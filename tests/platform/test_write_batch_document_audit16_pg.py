"""Many rows of one INSERT in the write batch, of columns JSON carries exactly (text, JSONB,
integers, booleans), go as one JSON document (one text parameter) taken apart by PostgreSQL
(issue 13, audit16), on real PostgreSQL, hot (a CoreSession) and through SQLAlchemy (an ORM
session): every value is written exactly as one row at a time and as the arrays write it (text of
every kind, NULLs, JSON of every kind with None as JSON null, large integers, booleans), rows keep
their order and their constant columns, insert-first and a guard work as before; no array is sent,
so asyncpg checks no element against abstract classes (the arrays took one to three checks per
value, a Python call or two each). Columns of other types (a timestamp) still go as arrays."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    event,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError

from hirepay_platform import write_batch
from hirepay_platform.db import Database, execute_alone
from tests.support.asyncpg_checks import asyncpg_abstract_checks
from tests.support.pg_schema import database_with
from tests.support.python_calls import profiled
from tests.support.write_batch_units import UNITS, started

META = MetaData()
NOTES = Table(
    "doc_notes",
    META,
    Column("id", String(40), primary_key=True),
    Column("key", String(16), nullable=False),
    Column("title", String(8), nullable=True),
    Column("body", Text, nullable=True),
    Column("count", BigInteger, nullable=True),
    Column("small", Integer, nullable=True),
    Column("flag", Boolean, nullable=True),
    Column("doc", JSONB, nullable=True),
)
LINES = Table(
    "doc_lines",
    META,
    Column("seq", BigInteger, Identity(), primary_key=True),
    Column("key", String(16), nullable=False),
    Column("line", Text, nullable=False),
    Column("details", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
STAMPED = Table(
    "doc_stamped",
    META,
    Column("id", String(40), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
)

_MANY = write_batch._FEW_ROWS + 3
# Values of every kind the columns take: text a JSON document or an array literal would have to
# escape (quotes, backslashes, commas, braces, the word NULL, control characters, characters
# outside the BMP), NULLs, JSON of every kind (None is JSON null, a list one value), integers at
# their limits, booleans.
_VALUES: list[dict[str, Any]] = [
    {"title": 'é"\\', "body": "a,b {c} NULL", "count": 2**63 - 1, "small": 2**31 - 1,
     "flag": True, "doc": {"a": [1, None, {"b": "\\u0041"}], "n": 1.5, "e": 0.1}},
    {"title": None, "body": None, "count": None, "small": None, "flag": None, "doc": None},
    {"title": "", "body": "", "count": -(2**63), "small": -(2**31), "flag": False,
     "doc": [1, "two", None]},
    {"title": "NULL", "body": "line\nnext\ttab \x01 🎉 ☃", "count": 0, "small": 0,
     "flag": True, "doc": "text"},
    {"title": "12345678", "body": '{"x": 1}', "count": 7, "small": 7, "flag": False, "doc": 5},
    {"title": " ", "body": "'quoted' \"double\"", "count": 1, "small": -1, "flag": True,
     "doc": {}},
    {"title": "x", "body": "\\N", "count": 2, "small": 2, "flag": False, "doc": []},
]  # fmt: skip


@pytest.fixture(scope="module")
async def db_url(make_database) -> str:
    return await database_with(make_database, "platform_document_rows", META)


@pytest.fixture(params=sorted(UNITS))
async def db(request, db_url: str) -> AsyncIterator[Database[Any]]:
    async with started(db_url, request.param, "doc_notes") as database:
        yield database


@pytest.fixture
def statements(db: Database[Any]) -> list[str]:
    """The SQL of every statement sent (SQLAlchemy's execution, while a listener is set)."""
    sent: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(" ".join(statement.split()))

    assert db.engine is not None
    event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    yield sent
    event.remove(db.engine.sync_engine, "before_cursor_execute", count)


def _note(key: str, i: int) -> dict[str, Any]:
    return {"id": f"{key}-{i:02d}", "key": key, **_VALUES[i % len(_VALUES)]}


async def _notes(db: Database[Any], key: str) -> list[dict[str, Any]]:
    async with db.engine.connect() as conn:  # type: ignore[union-attr]
        query = select(NOTES).where(NOTES.c.key == key).order_by(NOTES.c.id)
        return [dict(r._mapping) for r in await conn.execute(query)]


async def _lines(db: Database[Any], key: str) -> list[Any]:
    async with db.engine.connect() as conn:  # type: ignore[union-attr]
        query = select(LINES).where(LINES.c.key == key).order_by(LINES.c.seq)
        return list(await conn.execute(query))


async def _json_kinds(db: Database[Any], key: str) -> list[str | None]:
    async with db.engine.connect() as conn:  # type: ignore[union-attr]
        query = (
            select(func.jsonb_typeof(NOTES.c.doc)).where(NOTES.c.key == key).order_by(NOTES.c.id)
        )
        return list((await conn.execute(query)).scalars())


async def test_many_rows_are_written_as_one_row_at_a_time_and_the_arrays_write_them(db) -> None:
    """The same rows written one at a time, as arrays, and as one document, read back equal
    (JSON kinds kept: None is JSON null, not SQL NULL, as a JSONB column binds it)."""
    ways = ("one", "arrays", "document")
    keys = {way: f"{way[:3]}{uuid.uuid4().hex[:8]}" for way in ways}
    rows = {way: [_note(keys[way], i) for i in range(_MANY)] for way in ways}
    columns = tuple(rows["document"][0])
    assert write_batch._documented(NOTES, columns)
    async with db.uow() as uow:
        for row in rows["one"]:
            await uow.batch.insert(NOTES, [row])
            await uow.batch.flush()
        await uow.batch.insert(NOTES, rows["document"])
        await uow.commit()
    # The same rows as arrays, as on main (the built statements put aside meanwhile).
    built = dict(write_batch._STATEMENTS)
    write_batch._STATEMENTS.clear()
    write_batch._DOCUMENTED[(NOTES, columns)] = False
    try:
        async with db.uow() as uow:
            await uow.batch.insert(NOTES, rows["arrays"])
            await uow.commit()
    finally:
        del write_batch._DOCUMENTED[(NOTES, columns)]
        write_batch._STATEMENTS.clear()
        write_batch._STATEMENTS.update(built)
    written = {}
    for way, given in rows.items():
        written[way] = [{k: v for k, v in r.items() if k not in ("id", "key")} for r in given]
        read = await _notes(db, keys[way])
        assert [{k: v for k, v in r.items() if k not in ("id", "key")} for r in read] == written[
            way
        ]
    assert written["one"] == written["arrays"] == written["document"]
    kinds = {way: await _json_kinds(db, keys[way]) for way in ways}
    assert kinds["document"] == kinds["one"] == kinds["arrays"]
    assert kinds["document"][:5] == ["object", "null", "array", "string", "number"]


async def test_many_rows_keep_their_order_and_constants_in_one_statement(db, statements) -> None:
    key = f"ord{uuid.uuid4().hex[:8]}"
    details = [{"i": i, "s": "é\"'" * i} for i in range(_MANY)]
    async with db.uow() as uow:
        await uow.batch.insert(
            LINES,
            [{"key": key, "line": f"{i}", "details": d} for i, d in enumerate(details)],
            {"created_at": func.now()},
        )
        started = (await uow.batched.execute(select(func.now()))).scalar_one()
        await uow.commit()
    lines = await _lines(db, key)
    assert [r.line for r in lines] == [f"{i}" for i in range(_MANY)]  # ids in the rows' order
    assert [r.details for r in lines] == details
    assert {r.created_at for r in lines} == {started}
    (insert,) = [s for s in statements if s.startswith("INSERT INTO doc_lines")]
    assert "jsonb_array_elements" in insert and "unnest" not in insert, insert


async def test_many_rows_insert_first_keeps_existing_rows(db) -> None:
    key = f"fst{uuid.uuid4().hex[:8]}"
    async with db.uow() as uow:
        await uow.batch.insert(NOTES, [{**_note(key, 2), "body": "kept"}])
        await uow.commit()
    async with db.uow() as uow:
        rows = [{**_note(key, i), "body": "new"} for i in range(_MANY)]
        await uow.batch.insert(NOTES, rows, first=True)
        await uow.commit()
    bodies = [r["body"] for r in await _notes(db, key)]
    assert bodies == ["new", "new", "kept", *["new"] * (_MANY - 3)]


# A guard: the row the writes depend on, if it still holds what was seen.
_STILL = select(NOTES.c.id).where(
    NOTES.c.id == bindparam("g_id"), NOTES.c.count == bindparam("g_count")
)


async def test_a_guarded_flush_of_many_rows_writes_all_or_nothing(db) -> None:
    key = f"grd{uuid.uuid4().hex[:8]}"
    async with db.uow() as uow:
        await uow.batch.insert(NOTES, [{**_note(key, 0), "id": f"{key}-g", "count": 1}])
        await uow.commit()
    for seen, expected in ((0, False), (1, True)):
        async with db.uow() as uow:
            lines = [{"key": key, "line": f"{seen}.{i}", "details": {}} for i in range(_MANY)]
            await uow.batch.insert(LINES, lines, {"created_at": func.now()})
            held = await uow.batch.flush_if(
                _STILL, {"g_id": f"{key}-g", "g_count": seen}, execute_alone
            )
            assert held is expected
    assert [r.line for r in await _lines(db, key)] == [f"1.{i}" for i in range(_MANY)]


async def test_text_too_long_for_its_column_is_refused_as_one_rows_is(db) -> None:
    """A value longer than its column (title: 8 characters) is refused, as a one-row insert
    refuses it, not cut to the column's length (the arrays' cast to VARCHAR(8)[] cut it)."""
    key = f"lng{uuid.uuid4().hex[:8]}"
    rows = [{**_note(key, i), "title": "123456789" if i == 3 else "ok"} for i in range(_MANY)]
    with pytest.raises(DBAPIError, match="too long"):
        async with db.uow() as uow:
            await uow.batch.insert(NOTES, rows)
            await uow.commit()
    assert await _notes(db, key) == []


async def test_other_column_types_still_go_as_arrays(db, statements) -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    key = f"stp{uuid.uuid4().hex[:8]}"
    assert not write_batch._documented(STAMPED, ("id", "at"))
    async with db.uow() as uow:
        await uow.batch.insert(STAMPED, [{"id": f"{key}-{i}", "at": at} for i in range(_MANY)])
        await uow.commit()
    (insert,) = [s for s in statements if s.startswith("INSERT INTO doc_stamped")]
    assert "unnest" in insert and "jsonb_array_elements" not in insert, insert


async def test_many_rows_send_no_array_for_asyncpg_to_check(db) -> None:
    """An audit trail's shape (text, a NULL, JSON; a constant time): no abstract-class check of
    an array's elements (the arrays took 11 per row of these six columns)."""
    key = f"abc{uuid.uuid4().hex[:8]}"

    async def flush() -> None:
        async with db.uow() as uow:
            await uow.batch.insert(
                LINES,
                [{"key": key, "line": f"{i}", "details": {"i": i}} for i in range(_MANY)],
                {"created_at": func.now()},
            )
            await uow.commit()

    await flush()  # the statement compiled and prepared
    with profiled() as profile:
        await flush()
    assert asyncpg_abstract_checks(profile) == 0
    assert len(await _lines(db, key)) == 2 * _MANY
