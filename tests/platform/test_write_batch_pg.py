"""The shared write batch on real PostgreSQL: writes held back and sent as one statement keep the
meaning of the writes sent one by one (order, reads of pending writes, merged rows, changed columns
only, insert-first, constant SQL columns, nothing without a commit), and every statement it sends
is compiled once per shape (SQLAlchemy's cache hits on the second flush of a shape; issue 13)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    MetaData,
    String,
    Table,
    bindparam,
    event,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from hirepay_platform.db import Database, SqlAlchemyUnitOfWork, execute_alone
from hirepay_platform.errors import StaleRow
from hirepay_platform.write_batch import BatchedSession

META = MetaData()
ITEMS = Table(
    "items",
    META,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("count", BigInteger, nullable=False, default=0),
    Column("flag", Boolean, nullable=False, default=False),
    Column("doc", JSONB),
    Column("at", DateTime(timezone=True)),
)
LOG = Table(
    "item_log",
    META,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("item_id", ForeignKey("items.id"), nullable=False),
    Column("line", String(64), nullable=False),
    Column("details", JSONB),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


class BatchedUnitOfWork(SqlAlchemyUnitOfWork):
    """A unit of work whose statements go through the batch, as the services' do."""

    def _attach(self, session: AsyncSession) -> None:
        self.batched = BatchedSession(session)
        self.batch = self.batched.batch

    async def commit(self) -> None:
        await self.batch.flush()
        await super().commit()


@pytest.fixture(scope="module")
async def db(make_database) -> AsyncIterator[Database[BatchedUnitOfWork]]:
    database = Database(make_database("write_batch"), BatchedUnitOfWork, probe_table="pg_class")
    await database.start()
    assert database.engine is not None
    async with database.engine.begin() as conn:
        await conn.run_sync(META.create_all)
    yield database
    await database.stop()


class Statements:
    """Each statement the engine sends, with SQLAlchemy's compiled-cache outcome for it."""

    def __init__(self, database: Database[Any]) -> None:
        self.sent: list[tuple[str, str]] = []
        assert database.engine is not None
        self._engine = database.engine.sync_engine
        event.listen(self._engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: Any):
        self.sent.append((context.cache_hit.name, statement))

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._record)

    def writes(self) -> list[tuple[str, str]]:
        return [
            (hit, sql) for hit, sql in self.sent if not sql.lstrip().upper().startswith("SELECT")
        ]


@pytest.fixture
def statements(db: Database[BatchedUnitOfWork]) -> Any:
    recorder = Statements(db)
    yield recorder
    recorder.close()


def _item(item_id: str, **values: Any) -> dict[str, Any]:
    row = {"id": item_id, "name": "n", "count": 0, "flag": False, "doc": None, "at": None}
    return {**row, **values}


async def _rows(db: Database[BatchedUnitOfWork], table: Table, **where: Any) -> list[Any]:
    async with db.uow() as uow:
        query = select(table).where(*(table.c[k] == v for k, v in where.items()))
        return list((await uow.session.execute(query.order_by(table.c.id))).all())


async def _post(db: Database[BatchedUnitOfWork], key: str, n: int) -> None:
    """One shape of flush: an item, `n` log lines (several rows of one INSERT), an update."""
    async with db.uow() as uow:
        await uow.batch.insert(ITEMS, [_item(key, doc={"k": [1, "é"]}, at=datetime.now(UTC))])
        lines = [{"item_id": key, "line": f"l{i}", "details": [i]} for i in range(n)]
        await uow.batch.insert(LOG, lines, {"created_at": func.now()})
        await uow.commit()
    async with db.uow() as uow:
        uow.batch.seen(ITEMS, _item(key))
        await uow.batch.update(ITEMS, _item(key, count=n))
        await uow.batch.insert(
            LOG, [{"item_id": key, "line": "x", "details": None}], {"created_at": func.now()}
        )
        await uow.commit()


async def test_a_shape_sent_twice_is_compiled_once(db, statements) -> None:
    """The statements of a flush (several writes as CTEs, several rows of one table, an UPDATE)
    have a cache key: the second flush of the same shape, with other values and, past the few
    rows bound one by one, another number of rows, is a cache hit (the per-service batches
    before were NO_CACHE_KEY every time)."""
    await _post(db, "cache-1", 5)
    first = statements.writes()
    statements.sent.clear()
    await _post(db, "cache-2", 7)
    second = statements.writes()
    assert len(first) == len(second) == 2
    assert [hit for hit, _ in first] != ["NO_CACHE_KEY"] * 2
    assert [hit for hit, _ in second] == ["CACHE_HIT", "CACHE_HIT"], second
    assert [line.line for line in await _rows(db, LOG, item_id="cache-2")] == [
        "l0",
        "l1",
        "l2",
        "l3",
        "l4",
        "l5",
        "l6",
        "x",
    ]
    (item,) = await _rows(db, ITEMS, id="cache-2")
    assert item.count == 7 and item.doc == {"k": [1, "é"]}
    # A few rows (bound one by one): a statement per number of rows, each compiled once.
    await _post(db, "cache-3", 3)
    statements.sent.clear()
    await _post(db, "cache-4", 3)
    assert [hit for hit, _ in statements.writes()] == ["CACHE_HIT", "CACHE_HIT"]


async def test_reads_see_pending_writes_and_the_order_is_kept(db, statements) -> None:
    async with db.uow() as uow:
        await uow.batch.insert(ITEMS, [_item("order-1")])
        await uow.batch.insert(
            LOG, [{"item_id": "order-1", "line": "a", "details": None}], {"created_at": func.now()}
        )
        assert statements.writes() == []  # held back until the next statement
        seen = (
            await uow.batched.execute(select(ITEMS.c.name).where(ITEMS.c.id == "order-1"))
        ).scalar_one()
        assert seen == "n"
        # Rows of one table in the order given, over several calls and after a flush.
        for line in ("b", "c"):
            await uow.batch.insert(
                LOG,
                [{"item_id": "order-1", "line": line, "details": None}],
                {"created_at": func.now()},
            )
        # Another shape of the same table: what waits goes first, so the ids keep the order.
        await uow.batch.insert(
            LOG, [{"item_id": "order-1", "line": "d", "created_at": datetime.now(UTC)}]
        )
        await uow.batch.insert(
            LOG,
            [{"item_id": "order-1", "line": "e", "details": {"x": 1}}],
            {"created_at": func.now()},
        )
        await uow.commit()
    lines = await _rows(db, LOG, item_id="order-1")
    assert [line.line for line in lines] == ["a", "b", "c", "d", "e"]
    assert [line.details for line in lines] == [None, None, None, None, {"x": 1}]


async def test_a_row_written_twice_is_merged_and_updates_send_only_changed_columns(
    db, statements
) -> None:
    async with db.uow() as uow:
        await uow.batch.insert(ITEMS, [_item("twice-1")])
        await uow.batch.update(ITEMS, _item("twice-1", count=2))  # merged into the INSERT
        await uow.batch.insert(ITEMS, [_item("twice-2")])
        await uow.commit()
    assert len(statements.writes()) == 1
    assert [r.count for r in await _rows(db, ITEMS, id="twice-1")] == [2]

    statements.sent.clear()
    async with db.uow() as uow:
        (row,) = (await uow.batched.execute(select(ITEMS).where(ITEMS.c.id == "twice-2"))).all()
        uow.batch.seen(ITEMS, dict(row._mapping))
        await uow.batch.update(ITEMS, {**row._mapping, "count": 7})
        await uow.batch.update(ITEMS, {**row._mapping, "count": 7, "flag": True})  # merged
        await uow.batch.update(ITEMS, {**row._mapping, "count": 7, "flag": True})  # no change
        # A column another transaction changes meanwhile is not overwritten: it is not sent.
        async with db.uow() as other:
            await other.session.execute(
                ITEMS.update().where(ITEMS.c.id == "twice-2").values(name="other")
            )
            await other.commit()
        await uow.commit()
    (update_sql,) = [sql for _, sql in statements.writes() if "count=" in sql]
    assert "count=" in update_sql and "flag=" in update_sql and "name=" not in update_sql
    (item,) = await _rows(db, ITEMS, id="twice-2")
    assert (item.name, item.count, item.flag) == ("other", 7, True)


async def test_insert_first_keeps_the_existing_row_and_a_later_update_applies(db) -> None:
    async with db.uow() as uow:
        await uow.batch.insert(ITEMS, [_item("first-1", name="kept")])
        await uow.commit()
    async with db.uow() as uow:
        await uow.batch.insert(
            ITEMS, [_item("first-1", name="new"), _item("first-2", name="new")], first=True
        )
        await uow.batch.update(ITEMS, {"id": "first-2", "count": 3})  # after its insert-first
        await uow.commit()
    rows = await _rows(db, ITEMS, name="kept") + await _rows(db, ITEMS, id="first-2")
    assert [(r.id, r.name, r.count) for r in rows] == [
        ("first-1", "kept", 0),
        ("first-2", "new", 3),
    ]


async def test_types_and_constant_columns_bind_as_in_a_one_row_insert(db) -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC) + timedelta(hours=1)
    docs = [{"a": {"b": [1, 2]}, "s": "é\"'"}, [1, "two", None], "text", 5, None]
    async with db.uow() as uow:
        rows = [
            _item(f"types-{i}", doc=doc, at=at, flag=True, count=2**40)
            for i, doc in enumerate(docs)
        ]
        await uow.batch.insert(ITEMS, rows)
        await uow.batch.insert(
            LOG,
            [{"item_id": "types-0", "line": "t", "details": d} for d in docs],
            {"created_at": func.now()},
        )
        started = (await uow.batched.execute(text("SELECT now()"))).scalar_one()
        await uow.commit()
    items = [r for i in range(len(docs)) for r in await _rows(db, ITEMS, id=f"types-{i}")]
    assert [r.doc for r in items] == docs and {(r.at, r.flag, r.count) for r in items} == {
        (at, True, 2**40)
    }
    async with db.uow() as uow:
        kinds = (
            (
                await uow.session.execute(
                    text("SELECT jsonb_typeof(doc) FROM items WHERE id LIKE 'types-%' ORDER BY id")
                )
            )
            .scalars()
            .all()
        )
    assert kinds == ["object", "array", "string", "number", "null"]
    lines = await _rows(db, LOG, item_id="types-0")
    assert [r.details for r in lines] == docs and {r.created_at for r in lines} == {started}


async def test_nothing_is_sent_without_a_commit(db, statements) -> None:
    with pytest.raises(RuntimeError):
        async with db.uow() as uow:
            await uow.batch.insert(ITEMS, [_item("gone-1")])
            await uow.batch.update(ITEMS, {"id": "gone-1", "count": 1})
            raise RuntimeError("the unit of work fails before its commit")
    assert statements.writes() == [] and await _rows(db, ITEMS, id="gone-1") == []


async def test_concurrent_units_of_work_share_the_built_statements(db) -> None:
    """Twenty units of work flushing the same shapes at once: every row written, once."""
    await asyncio.gather(*(_post(db, f"conc-{i}", 1 + i % 3) for i in range(20)))
    for i in range(20):
        (item,) = await _rows(db, ITEMS, id=f"conc-{i}")
        assert item.count == 1 + i % 3
        assert len(await _rows(db, LOG, item_id=f"conc-{i}")) == 1 + i % 3 + 1


# A guard as its callers build it: once, a row locked if it still holds what was seen.
_STILL_COUNTED = (
    select(ITEMS.c.id)
    .where(ITEMS.c.id == bindparam("g_id"), ITEMS.c.count == bindparam("g_count"))
    .with_for_update()
)


async def test_a_guarded_flush_writes_everything_or_nothing(db, statements) -> None:
    """flush_if (issue 13): the writes go as one statement, alone when sent by execute_alone
    (no BEGIN, no COMMIT), and only if the guard finds its row: all of them or none."""
    async with db.uow() as uow:
        await uow.batch.insert(ITEMS, [_item("guard-1", count=1)])
        await uow.commit()
    for seen, expected in ((0, False), (1, True)):
        async with db.uow() as uow:
            uow.batch.seen(ITEMS, _item("guard-1", count=seen))
            await uow.batch.update(ITEMS, _item("guard-1", count=seen + 10, name="g"))
            await uow.batch.insert(
                LOG, [{"item_id": "guard-1", "line": f"after {seen}"}], {"created_at": func.now()}
            )
            statements.sent.clear()
            held = await uow.batch.flush_if(
                _STILL_COUNTED, {"g_id": "guard-1", "g_count": seen}, execute_alone
            )
            assert held is expected
            assert len(statements.sent) == 1  # one statement, and it committed by itself
        (item,) = await _rows(db, ITEMS, id="guard-1")
        lines = [line.line for line in await _rows(db, LOG, item_id="guard-1")]
        assert (item.count, lines) == ((11, ["after 1"]) if expected else (1, []))


async def test_a_guarded_batch_goes_alone_with_its_guard_or_not_at_all(db, statements) -> None:
    """guard(): the commit sends the batch with its guard, one statement alone; the guard finding
    nothing, or any statement of the unit of work before it, raises StaleRow, nothing written."""
    async with db.uow() as uow:
        await uow.batch.insert(ITEMS, [_item("guard-2", count=1)])
        await uow.commit()
    statements.sent.clear()

    async def bump(seen: int, *, read_first: bool = False) -> None:
        async with db.uow() as uow:
            uow.batch.guard(_STILL_COUNTED, {"g_id": "guard-2", "g_count": seen})
            await uow.batch.update(ITEMS, {"id": "guard-2", "count": seen + 1})
            if read_first:
                await uow.batched.execute(select(ITEMS.c.id))
            await uow.batch.flush_guarded()
            await uow.commit()

    for seen, read_first in ((0, False), (1, True)):
        with pytest.raises(StaleRow):
            await bump(seen, read_first=read_first)
    assert len(statements.sent) == 1  # the stale guard's statement; the read was never sent
    await bump(1)
    (item,) = await _rows(db, ITEMS, id="guard-2")
    assert item.count == 2


async def test_one_row_and_a_few_are_bound_as_values_more_as_arrays(db, statements) -> None:
    """A single row, and a few (write_batch._FEW_ROWS), need no arrays built and taken apart
    (a few rows go as one-row SELECTs joined by UNION ALL); more go as arrays; every shape
    writes the same values."""
    at = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    for key, n in (("one", 1), ("few", 2), ("many", 5)):
        async with db.uow() as uow:
            rows = [_item(f"{key}-{i}", doc=[1, {"a": None}], at=at) for i in range(n)]
            await uow.batch.insert(ITEMS, rows)
            await uow.commit()
    (one, few, many) = (sql for _, sql in statements.writes())
    assert "unnest" not in one and "UNION ALL" not in one
    assert "unnest" not in few and few.count("UNION ALL") == 1
    assert "unnest" in many and "UNION ALL" not in many
    for key in ("one-0", "few-0", "few-1", "many-0", "many-4"):
        (row,) = await _rows(db, ITEMS, id=key)
        assert (row.doc, row.at, row.count, row.flag) == ([1, {"a": None}], at, 0, False)
