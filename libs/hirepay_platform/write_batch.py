"""A unit of work's writes held back and sent together: one statement per flush, built once per shape.

The rows a unit of work inserts and updates wait here and go as one statement (each write a
data-modifying CTE) before the next statement of the same transaction or at its COMMIT (issue 13:
one round trip instead of one per row). Nothing else changes: every statement the session runs (a
read, a lock, an insert-first) first sends what is waiting, in the order it was written, and a unit
of work that does not commit discards its writes with the rest of its transaction.

Every statement sent here has a SQLAlchemy cache key and is built once per shape (the tables,
kinds, columns and constant expressions of its writes, and whether one row or several, never the
number of rows past a few): one row goes as `INSERT ... SELECT <its values>` (each bound as its
column binds it, no array to build and take apart), a few rows (up to _FEW_ROWS) as those one-row
SELECTs joined by UNION ALL (a statement per number of rows, each value bound the same way), more
rows as `INSERT ... SELECT FROM unnest(<one typed array per column>) WITH ORDINALITY`, not as a
multi-row VALUES (which SQLAlchemy cannot cache, and which would make the whole statement compile
again on every call). The arrays are typed by the columns (JSONB, timestamptz, ...), so each value
is bound exactly as a one-row INSERT binds it. Many rows whose columns are all text, JSONB,
integers or booleans (an audit trail's lines) go instead as one JSON document of the rows, a text
parameter encoded by one C call and taken apart by PostgreSQL (`jsonb_array_elements ... WITH
ORDINALITY`): asyncpg checks each element of an array in Python (issue 13, audit16).

A batch may go only if a guard finds its row (`flush_if`), all of it or nothing, in one statement
that may be a transaction of its own: a unit of work that assumed rows without reading them
(issue 13). `guard()` makes that the only way the batch may go: any statement of the unit of work
before it, or a write that cannot join the batch, raises StaleRow with nothing sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    Enum,
    Executable,
    Integer,
    Select,
    String,
    Table,
    Text,
    UpdateBase,
    bindparam,
    cast,
    column,
    exists,
    func,
    literal_column,
    select,
    union_all,
)
from sqlalchemy import update as sql_update
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import TypeEngine

from hirepay_platform import jsonb
from hirepay_platform.db import CoreSession, HotResult, HotStatement, execute_alone
from hirepay_platform.db import autocommit as session_autocommit
from hirepay_platform.db import dbapi_connection as session_dbapi_connection
from hirepay_platform.errors import StaleRow

INSERT = "insert"
INSERT_FIRST = "insert_first"  # ON CONFLICT (primary key) DO NOTHING: a row stays as it was
UPDATE = "update"  # one row, by its `id` column

_ORDINAL = "w_ord"  # the position of each row in its arrays: rows are inserted in that order
# Up to this many rows of one INSERT go bound one by one (UNION ALL), not as arrays. An array
# parameter costs SQLAlchemy's ARRAY conversion per column and asyncpg's checks of each element
# against abstract classes (a Python call each, two for a string): payments' audit lines, two
# rows of six columns, took 40 such checks and ~100 Python calls more per statement than two
# bound rows, with PostgreSQL's CPU per statement the same within noise (issue 13; 2, 4 and 8
# rows measured). Each number of rows is a statement of its own: kept to a few.
_FEW_ROWS = 4
_MAX_STATEMENTS = 1024  # built statements kept (shapes are few: one per code path)

# A guard: a statement returning the rows it found, built once (the object is part of the shape):
# a SELECT (FOR UPDATE to lock them), or an INSERT (insert-first) or UPDATE ... RETURNING.
Guard = Select[Any] | UpdateBase

# The shape of a flush (per write: kind, table, columns, constants' cache keys) -> its statement,
# hot (db.HotStatement): a posting's commits are batches, sent with far less Python (issue 13).
_STATEMENTS: dict[tuple[Hashable, ...], HotStatement] = {}


class _Write:
    """One held-back INSERT (rows with the same columns) or UPDATE (one row) of one table."""

    __slots__ = ("columns", "constants", "constants_key", "kind", "rows", "table")

    def __init__(
        self,
        kind: str,
        table: Table,
        rows: list[dict[str, Any]],
        constants: Mapping[str, ColumnElement[Any]],
        constants_key: Hashable = (),
    ) -> None:
        self.kind = kind
        self.table = table
        self.rows = rows
        self.columns = tuple(rows[0])  # an UPDATE's columns grow as changes merge into it
        self.constants = constants
        self.constants_key = constants_key

    def shape(self) -> Hashable:
        if self.kind == UPDATE:
            return (self.kind, self.table, tuple(self.rows[0]), self.constants_key)
        # One row and a few are bound as values, one statement per number of rows; more as
        # arrays, one statement for any number (_write_statement).
        n = len(self.rows)
        return (self.kind, self.table, self.columns, self.constants_key, n if n <= _FEW_ROWS else 0)


# The keys of constants given as one mapping built once (e.g. a module's `{"at": func.now()}`),
# by the mapping's identity (kept here, so its id is not reused): a cache key computed per insert
# cost about 10 Python calls (issue 13).
_CONSTANT_KEYS: dict[int, tuple[Mapping[str, ColumnElement[Any]], Hashable]] = {}


def _constants_key(constants: Mapping[str, ColumnElement[Any]]) -> Hashable:
    """What identifies constant expressions in a built statement: their SQL, not their objects
    (each call makes a new `func.now()`); a bound value in one would be frozen into the statement."""
    if not constants:
        return ()
    known = _CONSTANT_KEYS.get(id(constants))
    if known is not None and known[0] is constants:
        return known[1]
    keys = []
    for name, expression in constants.items():
        cache_key = expression._generate_cache_key()
        if cache_key is None or cache_key.bindparams:
            raise ValueError(f"constant column {name!r} must be SQL without bound values")
        keys.append((name, cache_key.key))
    if len(_CONSTANT_KEYS) >= _MAX_STATEMENTS:
        _CONSTANT_KEYS.clear()
    key = _CONSTANT_KEYS[id(constants)] = (constants, tuple(keys))
    return key[1]


# Whether the many rows of an INSERT of these columns go as one JSON document (_documented).
_DOCUMENTED: dict[tuple[Table, tuple[str, ...]], bool] = {}


def _documentable(type_: TypeEngine[Any]) -> bool:
    """Whether JSON carries a value of the column type exactly, as PostgreSQL reads it back:
    text (no bind conversion of its own: not an Enum), JSONB (a Python None is JSON null, as
    the column binds it: not none_as_null), integers, booleans. Anything else (timestamps,
    numerics, a TypeDecorator) goes as arrays."""
    if isinstance(type_, String):
        return not isinstance(type_, Enum)
    if isinstance(type_, JSONB):
        return not type_.none_as_null
    return isinstance(type_, Integer | Boolean)


def _documented(table: Table, columns: tuple[str, ...]) -> bool:
    """Whether many rows of `columns` go as one JSON document rather than an array per column:
    every column's type is _documentable (issue 13: asyncpg asks one to three abstract-class
    questions in Python of each element of an array, and SQLAlchemy encodes each JSONB element
    apart; a booking round's audit lines took ~30 Python calls per line that way)."""
    known = _DOCUMENTED.get((table, columns))
    if known is None:
        known = _DOCUMENTED[(table, columns)] = all(_documentable(table.c[c].type) for c in columns)
    return known


def _document_value(row: ColumnElement[Any], column: Column[Any]) -> ColumnElement[Any]:
    """The value of `column` in a row of a JSON document (`row`, jsonb): a JSONB column's value
    as it is (`->`: JSON null stays JSON null, as the column binds None), a string's text, an
    integer's or a boolean's text cast to the column's type (`->>`: JSON null is SQL NULL).
    Text is not cast to a length: a value too long for its column is refused, as one row's."""
    key = literal_column("'" + column.name.replace("'", "''") + "'")
    if isinstance(column.type, JSONB):
        return row.op("->", return_type=JSONB)(key)
    text_value = row.op("->>", return_type=Text)(key)
    return text_value if isinstance(column.type, String) else cast(text_value, column.type)


def _write_statement(write: _Write, n: int, held: ColumnElement[bool] | None = None) -> UpdateBase:
    """The statement of the `n`th write of a flush; its parameters are named `w<n>_<column>`.
    `held`: it writes only where this holds (see WriteBatch.flush_if)."""
    table, columns = write.table, tuple(write.rows[0])
    if write.kind == UPDATE:
        statement = (
            sql_update(table)
            .where(table.c.id == bindparam(f"w{n}_key", type_=table.c.id.type))
            .values(
                {c: bindparam(f"w{n}_{c}", type_=table.c[c].type) for c in columns if c != "id"}
            )
        )
        return statement if held is None else statement.where(held)
    if len(write.rows) == 1:
        # One row (the usual case): its values bound as they are, typed by their columns, with
        # no array to build and take apart on either side (issue 13).
        source = select(
            *(bindparam(f"w{n}_{c}", type_=table.c[c].type) for c in columns),
            *write.constants.values(),
        )
    elif len(write.rows) <= _FEW_ROWS:
        # A few rows: each a one-row SELECT of its values, bound as one row's are, with its
        # position to insert them in order (no array to convert or check element by element).
        each = union_all(
            *(
                select(
                    *(bindparam(f"w{n}r{i}_{c}", type_=table.c[c].type).label(c) for c in columns),
                    literal_column(str(i)).label(_ORDINAL),
                )
                for i in range(len(write.rows))
            )
        ).subquery(f"w{n}_rows")
        source = select(*(each.c[c] for c in columns), *write.constants.values()).order_by(
            each.c[_ORDINAL]
        )
    elif _documented(table, columns):
        # Many rows of JSON's own values: one JSON document of the rows (one text parameter,
        # `_parameters`), taken apart by PostgreSQL in their order (see _document_value).
        elements = (
            func.jsonb_array_elements(cast(bindparam(f"w{n}_rows", type_=Text), JSONB))
            .table_valued(column("r", JSONB), with_ordinality=_ORDINAL)
            .render_derived(name=f"w{n}_doc")
        )
        source = select(
            *(_document_value(elements.c.r, table.c[c]).label(c) for c in columns),
            *write.constants.values(),
        ).order_by(elements.c[_ORDINAL])
    else:
        # dimensions=1: a JSON value that is itself a list is one element, not a nested array.
        arrays = [
            bindparam(f"w{n}_{c}", type_=ARRAY(table.c[c].type, dimensions=1)) for c in columns
        ]
        rows = (
            func.unnest(*arrays).table_valued(*columns, with_ordinality=_ORDINAL).render_derived()
        )
        source = select(*(rows.c[c] for c in columns), *write.constants.values()).order_by(
            rows.c[_ORDINAL]
        )
    if held is not None:
        source = source.where(held)
    statement = insert(table).from_select([*columns, *write.constants], source)
    if write.kind == INSERT_FIRST:
        statement = statement.on_conflict_do_nothing(index_elements=list(table.primary_key))
    return statement


def _build(writes: Sequence[_Write], guard: Guard | None = None) -> Executable:
    if guard is not None:
        # The guard's rows first (locked if it says FOR UPDATE), then each write only if it
        # found one: all of them or none; the statement answers whether it did.
        found = guard.cte("guard")
        held = exists(select(literal_column("1")).select_from(found))
        ctes = [_write_statement(w, n, held).cte(f"w{n}") for n, w in enumerate(writes)]
        return select(held.label("held")).add_cte(*ctes)
    if len(writes) == 1:
        return _write_statement(writes[0], 0)
    # Sub-statements of one statement see one snapshot: each row is written by one of them (see
    # WriteBatch); a foreign key to a row inserted alongside is checked at the end of the statement.
    ctes = [_write_statement(w, n).cte(f"w{n}") for n, w in enumerate(writes)]
    return select(literal_column("1")).add_cte(*ctes)


def _statement(writes: Sequence[_Write], guard: Guard | None = None) -> HotStatement:
    # A guard is built once by its caller: the object itself is part of the shape.
    # By map, not a generator expression: its frame is entered once per write and once more at
    # the end (issue 13: three Python calls of a one-write flush, ~17 per posting).
    shape = (tuple(map(_Write.shape, writes)), guard)
    statement = _STATEMENTS.get(shape)
    if statement is None:
        if len(_STATEMENTS) >= _MAX_STATEMENTS:
            del _STATEMENTS[next(iter(_STATEMENTS))]
        statement = _STATEMENTS[shape] = HotStatement(_build(writes, guard))
    return statement


def _parameters(writes: Sequence[_Write]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for n, w in enumerate(writes):
        if w.kind == UPDATE:
            for column, value in w.rows[0].items():
                params[f"w{n}_key" if column == "id" else f"w{n}_{column}"] = value
        elif len(w.rows) == 1:
            for column in w.columns:
                params[f"w{n}_{column}"] = w.rows[0][column]
        elif len(w.rows) <= _FEW_ROWS:
            for i, row in enumerate(w.rows):
                for column in w.columns:
                    params[f"w{n}r{i}_{column}"] = row[column]
        else:
            _many_parameters(params, n, w)
    return params


def _many_parameters(params: dict[str, Any], n: int, w: _Write) -> None:
    """The parameters of the `n`th write, of many rows: one JSON document or an array each."""
    if _documented(w.table, w.columns):
        # The rows as they are (each holds exactly the write's columns): one C encoding.
        params[f"w{n}_rows"] = jsonb.dumps(w.rows)
    else:
        for column in w.columns:
            params[f"w{n}_{column}"] = [row[column] for row in w.rows]


class WriteBatch:
    """The held-back writes of one unit of work's session, sent by `flush()`.

    Rows are keyed by their table and `id` column. One statement writes a row once (its CTEs all
    see the rows as they were before it): a change of a row waiting to be inserted or updated is
    merged into that write; a write that cannot merge sends what waits first. Rows inserted into
    one table go in the order they were given (append-only logs keep the order of their ids)."""

    def __init__(self, session: AsyncSession | CoreSession) -> None:
        self._session = session
        # Whether the session runs hot statements (a CoreSession), else their SQLAlchemy statement.
        self._hot = isinstance(session, CoreSession)
        self._writes: list[_Write] = []
        # The waiting row of each key, and the write that holds it.
        self._pending: dict[tuple[Table, object], tuple[_Write, dict[str, Any]]] = {}
        # The values of each row read (`seen`) as the database holds them once the batch is sent.
        self._known: dict[tuple[Table, object], dict[str, Any]] = {}
        # The guard the batch may go with, and its parameters (`guard`).
        self._guard: tuple[Guard, dict[str, Any]] | None = None

    def guard(self, guard: Guard, params: Mapping[str, Any]) -> None:
        """This unit of work's writes go only by `flush_guarded` (its commit): one statement,
        alone, that writes them only if `guard` finds its row (see flush_if). Until then any
        statement of the unit of work, or a write that cannot join the batch, raises StaleRow
        with nothing sent: the unit of work is then redone the usual way."""
        if self._guard is not None:
            raise RuntimeError("one guard per unit of work")
        self._guard = (guard, dict(params))

    @property
    def guarded(self) -> bool:
        """Whether the batch waits for `flush_guarded`."""
        return self._guard is not None

    async def flush_guarded(self) -> None:
        """Send the batch with its guard, as a statement that commits by itself (db.execute_alone);
        StaleRow if the guard found nothing (nothing written)."""
        if self._guard is None:
            raise RuntimeError("no guard")
        (guard, params), self._guard = self._guard, None
        if not await self.flush_if(guard, params, execute_alone):
            raise StaleRow("a guarded batch's rows are not as the unit of work assumed")

    def seen(self, table: Table, values: dict[str, Any]) -> None:
        """A row as read or written: a later `update` of it sends only the columns that differ.
        `values` is kept (and kept current) by the batch; pass a dict of your own."""
        self._known[(table, values["id"])] = values

    async def insert(
        self,
        table: Table,
        rows: Sequence[Mapping[str, Any]],
        constants: Mapping[str, ColumnElement[Any]] | None = None,
        *,
        first: bool = False,
    ) -> None:
        """INSERT `rows` plus `constants` (SQL expressions, e.g. `func.now()`) in every row;
        `first`: insert-first, a row whose primary key exists already stays as it is."""
        kind = INSERT_FIRST if first else INSERT
        if constants:
            constants_key = _constants_key(constants)
        else:  # (most inserts: no call to find that no constant has a key)
            constants, constants_key = {}, ()
        for given in rows:
            row = dict(given)
            key = (table, row["id"]) if "id" in row else None
            if key is not None and key in self._pending:
                await self.flush()  # this row waits already: it is sent first, then this write
            write = await self._insert_into(table, kind, row, constants, constants_key)
            if key is not None:
                self._pending[key] = (write, row)

    async def _insert_into(
        self,
        table: Table,
        kind: str,
        row: dict[str, Any],
        constants: Mapping[str, ColumnElement[Any]],
        constants_key: Hashable,
    ) -> _Write:
        """Add `row` to the waiting INSERT of its table; one INSERT of another kind or shape there
        is sent first (one INSERT per table per statement keeps the order of the rows, and of
        their ids: the CTEs of one statement run in no given order)."""
        for w in self._writes:
            if w.table is not table or w.kind == UPDATE:
                continue
            if w.kind == kind and set(w.columns) == row.keys() and w.constants_key == constants_key:
                w.rows.append(row)
                return w
            await self.flush()
            break
        write = _Write(kind, table, [row], constants, constants_key)
        self._writes.append(write)
        return write

    async def update(self, table: Table, values: Mapping[str, Any]) -> None:
        """UPDATE the row of `table` whose id is `values["id"]` to `values` (some or all of its
        columns): only those that differ from the row as `seen` are sent, nothing if none does."""
        key = (table, values["id"])
        before = self._known.get(key)
        changed = {
            column: value
            for column, value in values.items()
            if column != "id"
            and (before is None or column not in before or before[column] != value)
        }
        if before is not None:
            before.update(values)
        if not changed:
            return
        pending = self._pending.get(key)
        if pending is not None:
            write, row = pending
            if write.kind == UPDATE or (write.kind == INSERT and changed.keys() <= row.keys()):
                row.update(changed)
                return
            await self.flush()  # an insert-first, or an insert without these columns: send it
        row = {"id": values["id"], **changed}
        write = _Write(UPDATE, table, [row], {})
        self._writes.append(write)
        self._pending[key] = (write, row)

    async def flush(self) -> None:
        """Send the waiting writes, as one statement."""
        if self._guard is not None:  # a guarded batch is one statement or nothing
            raise StaleRow("a statement before a guarded batch, or writes that do not fit it")
        if not self._writes:
            return
        writes, self._writes = self._writes, []
        self._pending.clear()
        statement = _statement(writes)
        await self._session.execute(  # type: ignore[call-overload]
            statement if self._hot else statement.statement, _parameters(writes)
        )

    async def flush_if(
        self,
        guard: Guard,
        params: Mapping[str, Any],
        execute: Execute | None = None,
    ) -> bool:
        """Send the waiting writes as one statement that writes them only if `guard` (a SELECT
        built once, run first inside the statement, with `params`; FOR UPDATE to lock what it
        finds) finds a row: whether it did (then all were written, else none). An optimistic
        unit of work's commit: rows it assumed unchanged are checked and written in one round
        trip (issue 13). `execute` sends the statement (default: the session's execute; e.g.
        db.execute_alone for a statement that is a transaction of its own)."""
        writes, self._writes = self._writes, []
        self._pending.clear()
        send = execute or _session_execute
        statement = _statement(writes, guard)
        result = await send(
            self._session,
            statement if self._hot else statement.statement,
            {**_parameters(writes), **params},
        )
        return bool(result.scalar_one())


# How a statement is sent: (session, statement, parameters) -> its result.
Execute = Callable[
    [Any, Executable | HotStatement, Mapping[str, Any]], Awaitable[Result[Any] | HotResult]
]


async def _session_execute(
    session: Any, statement: Executable | HotStatement, params: Mapping[str, Any]
) -> Result[Any] | HotResult:
    return await session.execute(statement, params)  # type: ignore[no-any-return]


class BatchedSession:
    """The unit of work's session as its repositories see it: whatever a repository executes
    goes after the writes waiting in `batch`, so reads see them and the order is kept."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.batch = WriteBatch(session)

    async def execute(self, statement: Any, params: Any = None, **kw: Any) -> Result[Any]:
        await self.batch.flush()
        return await self.session.execute(statement, params, **kw)

    async def scalar(self, statement: Any, params: Any = None, **kw: Any) -> Any:
        await self.batch.flush()
        return await self.session.scalar(statement, params, **kw)

    async def scalars(self, statement: Any, params: Any = None, **kw: Any) -> Any:
        await self.batch.flush()
        return await self.session.scalars(statement, params, **kw)

    async def connection(self, **kw: Any) -> Any:
        await self.batch.flush()
        return await self.session.connection(**kw)

    async def dbapi_connection(self) -> Any:
        """The session's DBAPI connection (db.execute_alone), after the waiting writes: on a
        CoreSession without making SQLAlchemy's Connection (issue 13)."""
        await self.batch.flush()
        return await session_dbapi_connection(self.session)

    async def autocommit(self) -> None:
        """Each later statement a transaction of its own (db.autocommit), after the waiting
        writes: on a CoreSession without making SQLAlchemy's Connection (issue 13)."""
        await self.batch.flush()
        await session_autocommit(self.session)
