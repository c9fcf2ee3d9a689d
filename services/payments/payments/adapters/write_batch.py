"""Writes whose outcome nobody reads (audit entries, outbox events, a payment's row) held back and
sent together as one statement (data-modifying CTEs) just before the next statement or the commit
of the same transaction (issue 13: one round trip instead of one per write).

Nothing changes but when the server receives them: they belong to the same local transaction,
every statement of it that runs later (a read included) is preceded by them, and a unit of work
that does not commit discards them with the rest of its transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table, bindparam, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncSession

# (kind, table, row columns, constant columns, rows) -> the combined statement, built once.
_ShapeKey = tuple[tuple[str, str, tuple[str, ...], tuple[str, ...], int], ...]

INSERT = "insert"
INSERT_FIRST = "insert_first"  # ON CONFLICT (primary key) DO NOTHING: a row stays as it was
UPDATE = "update"
_STATEMENTS: dict[_ShapeKey, Any] = {}


class _Write:
    __slots__ = ("constants", "key", "kind", "rows", "table")

    def __init__(
        self,
        kind: str,
        table: Table,
        rows: list[dict[str, Any]],
        constants: Mapping[str, ColumnElement[Any]],
        key: str = "",
    ) -> None:
        self.kind = kind  # INSERT or INSERT_FIRST (rows), UPDATE (one row, by `key` = its id)
        self.table = table
        self.rows = rows
        self.constants = constants
        self.key = key

    def shape(self) -> tuple[str, str, tuple[str, ...], tuple[str, ...], int]:
        return (
            self.kind,
            self.table.name,
            tuple(self.rows[0]),
            tuple(self.constants),
            len(self.rows),
        )


def _build(writes: Sequence[_Write]) -> Any:
    ctes = []
    for n, w in enumerate(writes):
        columns = list(w.rows[0])

        def param(i: int, column: str, n: int = n, w: _Write = w) -> Any:
            return bindparam(f"w{n}_{i}_{column}", type_=w.table.c[column].type)

        if w.kind in (INSERT, INSERT_FIRST):
            values = [
                {**{c: param(i, c) for c in columns}, **w.constants} for i in range(len(w.rows))
            ]
            statement: Any = insert(w.table).values(values)
            if w.kind == INSERT_FIRST:
                statement = statement.on_conflict_do_nothing(
                    index_elements=list(w.table.primary_key.columns)
                )
        else:
            statement = (
                update(w.table)
                .where(w.table.c.id == bindparam(f"w{n}_key", type_=w.table.c.id.type))
                .values({**{c: param(0, c) for c in columns}, **w.constants})
            )
        ctes.append(statement.cte(f"w{n}"))
    return select(literal_column("1")).add_cte(*ctes)


class WriteBatch:
    """The held-back writes of one unit of work's session."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._writes: list[_Write] = []

    async def insert(
        self,
        table: Table,
        rows: list[dict[str, Any]],
        constants: Mapping[str, ColumnElement[Any]] | None = None,
        *,
        first: bool = False,
    ) -> None:
        """INSERT `rows` (same columns each) plus `constants` (SQL expressions) in every row;
        `first`: insert-first (a row that exists already is left as it is)."""
        if not rows:
            return
        kind = INSERT_FIRST if first else INSERT
        constants = constants or {}
        for w in self._writes:
            if w.table is table and w.kind != UPDATE:
                same_columns = set(w.rows[0]) == set(rows[0]) and set(w.constants) == set(constants)
                if w.kind == kind and same_columns:
                    # One multi-row INSERT keeps the order of the rows (and of their ids); the
                    # CTEs of one statement run in no given order.
                    w.rows.extend(rows)
                    return
                await self.flush()  # another shape of the same table: keep the order
                break
        self._writes.append(_Write(kind, table, list(rows), constants))

    async def update(self, table: Table, row_id: str, values: dict[str, Any]) -> None:
        """UPDATE the row of `table` whose id is `row_id` with `values`.

        The CTEs of one statement all see the rows as they were before it, and one row is not
        updated twice by it: a change of a row inserted or updated by a held-back write is
        merged into that write."""
        if not values:
            return
        for w in self._writes:
            if w.table is not table:
                continue
            if w.kind == UPDATE and w.key == row_id:
                w.rows[0].update(values)
                return
            for row in w.rows if w.kind == INSERT else ():
                if row.get("id") == row_id and set(values) <= set(row):
                    row.update(values)
                    return
        self._writes.append(_Write(UPDATE, table, [dict(values)], {}, row_id))

    async def flush(self) -> None:
        """Send the held-back writes, in one statement."""
        if not self._writes:
            return
        writes, self._writes = self._writes, []
        shape = tuple(w.shape() for w in writes)
        statement = _STATEMENTS.get(shape)
        if statement is None:
            statement = _STATEMENTS[shape] = _build(writes)
        params: dict[str, Any] = {}
        for n, w in enumerate(writes):
            if w.kind == UPDATE:
                params[f"w{n}_key"] = w.key
            for i, row in enumerate(w.rows):
                for column, value in row.items():
                    params[f"w{n}_{i}_{column}"] = value
        await self._session.execute(statement, params)


class BatchedSession:
    """The unit of work's session as its repositories see it: every statement they run is
    preceded by the held-back writes."""

    def __init__(self, session: AsyncSession, batch: WriteBatch) -> None:
        self.session = session
        self.batch = batch

    async def execute(self, statement: Any, params: Any = None, **kw: Any) -> Result[Any]:
        await self.batch.flush()
        return await self.session.execute(statement, params, **kw)

    async def scalar(self, statement: Any, params: Any = None, **kw: Any) -> Any:
        await self.batch.flush()
        return await self.session.scalar(statement, params, **kw)
