"""JSONB values as json.dumps and json.loads make and read them (hirepay_platform.jsonb, issue 13):
the same text and the same refusals for every value, the engine's JSONB parameters and results
through them, and PostgreSQL storing exactly what it stored before (money and audit data kept
exact: PAY-6)."""

from __future__ import annotations

import decimal
import enum
import json
import math
import pstats
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, bindparam, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import create_async_engine

from hirepay_platform import jsonb
from hirepay_platform.db import async_url, create_engine
from tests.support.python_calls import profiled


class Colour(enum.StrEnum):
    RED = "red"


class Size(enum.IntEnum):
    BIG = 3


class Plain(enum.Enum):
    A = 1


class Dict(dict):  # type: ignore[type-arg]
    pass


_BIG = 2**80
# Values json takes: non-ASCII (escaped), control characters, lone surrogates (escaped as json
# escapes them), integers past 64 bits, every kind of float json writes (NaN and infinities
# included: PostgreSQL refuses them, as before), non-str keys json turns to strings, tuples,
# str and int subclasses (enums), nested containers.
VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    _BIG,
    -_BIG,
    1.5,
    -0.0,
    1e16,
    1e-7,
    0.1 + 0.2,
    float("nan"),
    float("inf"),
    -float("inf"),
    "",
    "plain",
    "Café ünïcode 日本 🎉",
    'quote " backslash \\ slash / newline \n tab \t nul \x00 bell \x07',
    "lone \ud800 surrogate",
    [],
    {},
    [1, "a", None, [2, [3, {}]]],
    (1, 2),
    {"b": 1, "a": {"nested": [1.0, "é"]}},
    {1: "int key", 2.5: "float key", False: "bool key", None: "none key"},
    {"colour": Colour.RED, "size": Size.BIG},
    Colour.RED,
    Dict(x=1),
    {"amount_minor": 4900, "currency": "USD", "metadata": {"job_id": "j-1", "note": "ü"}},
]

# Values json refuses, each with its own exception.
REFUSED: list[Any] = [
    decimal.Decimal("1.10"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    datetime(2026, 12, 1, tzinfo=UTC),
    Plain.A,
    {"k": {1, 2}},
    {("tuple", "key"): 1},
    b"bytes",
    object(),
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_dumps_writes_what_json_dumps_writes(value: Any) -> None:
    assert jsonb.dumps(value) == json.dumps(value)


@pytest.mark.parametrize("value", REFUSED, ids=repr)
def test_dumps_refuses_what_json_dumps_refuses_with_the_same_error(value: Any) -> None:
    with pytest.raises(Exception) as by_json:
        json.dumps(value)
    with pytest.raises(Exception) as by_us:
        jsonb.dumps(value)
    assert type(by_us.value) is type(by_json.value)
    assert str(by_us.value) == str(by_json.value)


def test_a_circular_structure_is_refused_as_json_refuses_it_every_time() -> None:
    loop: list[Any] = []
    loop.append(loop)
    for _ in range(2):  # a refusal leaves nothing behind for the next value
        with pytest.raises(ValueError, match="Circular reference detected"):
            jsonb.dumps({"a": loop})
    shared = [1]
    assert jsonb.dumps([shared, shared]) == "[[1], [1]]"  # the same list twice is no circle


@pytest.mark.parametrize(
    "text_",
    [json.dumps(v) for v in VALUES if not isinstance(v, float) or math.isfinite(v)]
    + ['{"a":1,"a":2}', "12345678901234567890123456789", "1E400", "NaN", '"\\ud800"'],
)
def test_loads_reads_what_json_loads_reads(text_: str) -> None:
    ours, theirs = jsonb.loads(text_), json.loads(text_)
    assert repr(ours) == repr(theirs) and type(ours) is type(theirs)


@pytest.mark.parametrize(
    "text_", ["", " ", " 1", "1 ", "\ufeff1", "[1,]", "1 2", "{", '"\x00"', "tru", "[1]x"]
)
def test_loads_reads_or_refuses_the_rest_as_json_loads_does(text_: str) -> None:
    try:
        expected: Any = json.loads(text_)
    except json.JSONDecodeError as refused:
        with pytest.raises(json.JSONDecodeError) as caught:
            jsonb.loads(text_)
        assert (caught.value.msg, caught.value.pos) == (refused.msg, refused.pos)
    else:
        assert jsonb.loads(text_) == expected


def test_dumps_and_loads_cost_one_python_call_each() -> None:
    value = {"amount_minor": 4900, "metadata": {"job_id": "j-1"}, "ids": [1, 2, 3]}
    written = json.dumps(value)
    with profiled() as profile:
        jsonb.dumps(value)
        jsonb.loads(written)
    python = [
        name
        for (file, _, name) in pstats.Stats(profile).stats  # type: ignore[attr-defined]
        if file.endswith(".py")
    ]
    assert sorted(python) == ["dumps", "loads"], python  # json's dumps/encode/iterencode: none


metadata = MetaData()
docs = Table(
    "jsonb_docs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("doc", JSONB, nullable=True),
)
_STORABLE = [v for v in VALUES if not (isinstance(v, float) and not math.isfinite(v))]
_STORABLE = [v for v in _STORABLE if "\x00" not in json.dumps(v) and "\\u0000" not in json.dumps(v)]
_STORABLE = [v for v in _STORABLE if "\\ud800" not in json.dumps(v)]


async def test_postgresql_stores_and_returns_what_it_did_with_json_dumps_and_loads(
    make_database,
) -> None:
    """Every value, written by the platform's engine and by a stock SQLAlchemy engine (json.dumps
    and json.loads): PostgreSQL stores the same JSONB, both read it back the same; what
    PostgreSQL refused (NaN, infinities, NUL, lone surrogates) it still refuses."""
    url = make_database("platform_jsonb")
    ours = create_engine(url)
    stock = create_async_engine(async_url(url))
    try:
        async with ours.begin() as conn:
            await conn.run_sync(metadata.create_all)
        insert = docs.insert().values(id=bindparam("id"), doc=bindparam("doc"))
        for engine, base in ((ours, 0), (stock, 1000)):
            async with engine.begin() as conn:
                for i, value in enumerate(_STORABLE):
                    await conn.execute(insert, {"id": base + i, "doc": value})
        async with stock.connect() as conn:
            stored = await conn.execute(
                text(
                    "SELECT a.doc::text, b.doc::text FROM jsonb_docs a"
                    " JOIN jsonb_docs b ON b.id = a.id + 1000 ORDER BY a.id"
                )
            )
            pairs = stored.all()
        assert len(pairs) == len(_STORABLE)
        assert all(a == b for a, b in pairs), [p for p in pairs if p[0] != p[1]]
        read: dict[str, list[Any]] = {}
        for name, engine in (("ours", ours), ("stock", stock)):
            async with engine.connect() as conn:
                rows = await conn.execute(select(docs.c.doc).order_by(docs.c.id))
                read[name] = [repr(r.doc) for r in rows]
        assert read["ours"] == read["stock"]
        # The platform's engine writes and reads through jsonb, not json's three-frame path.
        async with ours.begin() as conn:
            await conn.execute(insert, {"id": 5000, "doc": {"a": [1]}})  # (compiled, prepared)
            with profiled() as profile:
                await conn.execute(insert, {"id": 5001, "doc": {"a": [1]}})
                await conn.scalar(select(docs.c.doc).where(docs.c.id == 5001))
        called = {
            ("/".join(file.replace("\\", "/").rsplit("/", 2)[-2:]), name)
            for (file, _, name) in pstats.Stats(profile).stats  # type: ignore[attr-defined]
        }
        assert ("hirepay_platform/jsonb.py", "dumps") in called
        assert ("hirepay_platform/jsonb.py", "loads") in called
        assert not {c for c in called if c[0].startswith("json/")}, called
        for bad in (float("nan"), float("inf"), {"t": "nul \x00"}, "lone \ud800"):
            for engine in (ours, stock):
                with pytest.raises(sa_exc.DBAPIError):
                    async with engine.begin() as conn:
                        await conn.execute(insert, {"id": 9999, "doc": bad})
        for refused in REFUSED:
            for engine in (ours, stock):
                with pytest.raises((TypeError, sa_exc.StatementError)) as caught:
                    async with engine.begin() as conn:
                        await conn.execute(insert, {"id": 9998, "doc": refused})
                assert isinstance(caught.value, TypeError) or isinstance(
                    caught.value.orig,  # type: ignore[union-attr]
                    TypeError,
                )
    finally:
        await ours.dispose()
        await stock.dispose()
