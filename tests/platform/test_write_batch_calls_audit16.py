"""The write batch's own Python per write (issue 13, audit16): an insert without constant columns
asks for no constants' key, and a flush keys its statement without a generator expression (its
frame entered once per write and once more). Pinned as the functions a unit of work's two
one-row inserts and their flush enter: payments' units of work flush about nine times per
posting (~20 Python calls fewer per posting)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, DateTime, MetaData, String, Table, func
from sqlalchemy.dialects.postgresql import JSONB

from hirepay_platform.write_batch import WriteBatch
from tests.support.python_calls import entered, of_package

ROWS = Table(
    "rows",
    MetaData(),
    Column("id", String(8), primary_key=True),
    Column("doc", JSONB),
    Column("at", DateTime(timezone=True)),
)
_NOW = {"at": func.now()}  # a module's constants, built once


class _Session:
    """Takes what the batch sends (a statement, its parameters) and answers nothing."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, dict[str, Any]]] = []

    async def execute(self, statement: Any, params: dict[str, Any]) -> None:
        self.sent.append((statement, params))


async def _flushed(session: _Session, i: int, constants: dict[str, Any] | None) -> list[str]:
    """The write batch's functions entered by two one-row inserts and their flush."""
    with entered() as seen:
        batch = WriteBatch(session)  # type: ignore[arg-type]
        await batch.insert(ROWS, [{"id": f"a{i}", "doc": {"n": i}}], constants)
        await batch.insert(ROWS, [{"id": f"b{i}", "doc": None}], constants)
        await batch.flush()
    return sorted(of_package(seen, "hirepay_platform"))


async def test_an_insert_and_its_flush_enter_only_the_batchs_own_steps() -> None:
    session = _Session()
    await _flushed(session, 0, None)  # the statement built
    called = await _flushed(session, 1, None)
    inserts = ["__init__", "insert", "insert", "_insert_into", "_insert_into"]  # one _Write
    flush = ["__init__", "flush", "_statement", "shape", "_parameters"]  # and the WriteBatch
    assert called == sorted(inserts + flush), called
    statement, params = session.sent[-1]
    # Two rows of one INSERT, bound one by one, in one statement built once.
    assert params == {"w0r0_id": "a1", "w0r0_doc": {"n": 1}, "w0r1_id": "b1", "w0r1_doc": None}
    assert statement is session.sent[0][0]


async def test_constant_columns_are_keyed_once_per_insert_and_kept() -> None:
    session = _Session()
    await _flushed(session, 0, _NOW)
    called = await _flushed(session, 1, _NOW)
    assert called.count("_constants_key") == 2  # one per insert: by the mapping's identity
    assert "<genexpr>" not in called
    statement, _ = session.sent[-1]
    assert "now()" in str(statement)
