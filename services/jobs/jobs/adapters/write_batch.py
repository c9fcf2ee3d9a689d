"""The writes of one unit of work sent together: one statement per flush instead of one per row.

A saga step writes its saga, its job, the job's transitions and a saga log line; each used to be
its own round trip (and each UPDATE set every column). Here they wait in the unit of work and go
as one statement (data-modifying CTEs) before the next statement of the transaction or at its
COMMIT, and an UPDATE sets only the columns that differ from the row as it was read (issue 13).
Within one transaction nothing can tell the difference: every statement the session executes
(a read, a lock, an insert-first) first sends what is waiting, in the order it was written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Executable, Table, insert, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(slots=True)
class _RowWrite:
    """The pending INSERT of a new row, or the pending UPDATE (changed columns) of a read one."""

    table: Table
    values: dict[str, Any]
    insert: bool


class WriteBatch:
    """Rows to insert or update (by their `id` column) and append-only rows to insert, kept until
    `flush()`. A row written twice in one batch is written once with its last values (one
    statement cannot modify a row twice)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._rows: dict[tuple[str, object], _RowWrite] = {}
        self._appends: dict[str, tuple[Table, list[dict[str, Any]]]] = {}
        # The values of each row as the database holds them once the batch is flushed.
        self._known: dict[tuple[str, object], dict[str, Any]] = {}

    def seen(self, table: Table, values: dict[str, Any]) -> None:
        """A row as read: a later update sends only the columns that changed."""
        self._known[(table.name, values["id"])] = values

    def insert(self, table: Table, values: dict[str, Any]) -> None:
        key = (table.name, values["id"])
        self._rows[key] = _RowWrite(table, dict(values), insert=True)
        self._known[key] = dict(values)

    def update(self, table: Table, values: dict[str, Any]) -> None:
        """Update the row to `values` (every column); only what differs is sent."""
        key = (table.name, values["id"])
        before = self._known.get(key)
        changed = {
            name: value
            for name, value in values.items()
            if before is None or name not in before or before[name] != value
        }
        changed.pop("id", None)
        self._known[key] = dict(values)
        pending = self._rows.get(key)
        if pending is not None:
            pending.values.update(changed)
        elif changed:
            self._rows[key] = _RowWrite(table, {"id": values["id"], **changed}, insert=False)

    def append(self, table: Table, rows: list[dict[str, Any]]) -> None:
        """Rows only ever inserted (a log, transitions)."""
        if rows:
            self._appends.setdefault(table.name, (table, []))[1].extend(rows)

    def _statements(self) -> list[Executable]:
        statements: list[Executable] = []
        for write in self._rows.values():
            table = write.table
            if write.insert:
                statements.append(insert(table).values(**write.values))
            else:
                values = dict(write.values)
                row_id = values.pop("id")
                statements.append(update(table).where(table.c.id == row_id).values(**values))
        for table, rows in self._appends.values():
            statements.append(insert(table).values(rows))
        return statements

    async def flush(self) -> None:
        """Send what waits: one statement, several as the CTEs of one statement."""
        statements = self._statements()
        self._rows.clear()
        self._appends.clear()
        if not statements:
            return
        if len(statements) == 1:
            await self._session.execute(statements[0])
            return
        # Sub-statements of one statement see one snapshot and each row is written once here; a
        # foreign key to a row inserted alongside is checked at the end of the statement.
        combined = select(literal_column("1")).add_cte(
            *(statement.cte(f"w{i}") for i, statement in enumerate(statements))
        )
        await self._session.execute(combined)


class BatchingSession:
    """The unit of work's session as its repositories see it: whatever a repository executes
    goes after the writes waiting in the batch, so reads see them and order is kept."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.writes = WriteBatch(session)

    async def execute(self, statement: Executable, params: Any = None, **kw: Any) -> Any:
        await self.writes.flush()
        return await self.session.execute(statement, params, **kw)

    async def scalar(self, statement: Executable, params: Any = None, **kw: Any) -> Any:
        await self.writes.flush()
        return await self.session.scalar(statement, params, **kw)

    async def scalars(self, statement: Executable, params: Any = None, **kw: Any) -> Any:
        await self.writes.flush()
        return await self.session.scalars(statement, params, **kw)

    async def connection(self, **kw: Any) -> Any:
        await self.writes.flush()
        return await self.session.connection(**kw)
