"""The one Try-Confirm-Cancel barrier, SQL part: the table every participant declares and the
repository that writes it insert-first (see hirepay_platform.tcc for the rules)."""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    MetaData,
    PrimaryKeyConstraint,
    Row,
    Select,
    String,
    Table,
    TextClause,
    TextualSelect,
    UpdateBase,
    bindparam,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from hirepay_platform import jsonb
from hirepay_platform.fingerprint import Fingerprint
from hirepay_platform.sql_lists import joined_checked, listed, quoted, quoted_list
from hirepay_platform.tcc import BarrierRecord, TccBranch, TccOp
from hirepay_platform.write_batch import WriteBatch

TABLE_NAME = "tcc_barriers"


def barrier_table(metadata: MetaData) -> Table:
    """The barrier table on a service's metadata (its Alembic migration creates the same)."""
    return Table(
        TABLE_NAME,
        metadata,
        Column("global_tx_id", String(200), nullable=False),
        Column("branch_id", String(200), nullable=False),
        Column("op", String(16), nullable=False),
        # Who wrote the row: a "try" row written by a Cancel marks a null compensation.
        Column("origin", String(16), nullable=False),
        Column("fingerprint", JSONB, nullable=False, server_default="{}"),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint("global_tx_id", "branch_id", "op", name="pk_tcc_barriers"),
        CheckConstraint("op IN ('try', 'confirm', 'cancel')", name="ck_tcc_barriers_op"),
        CheckConstraint("origin IN ('try', 'confirm', 'cancel')", name="ck_tcc_barriers_origin"),
    )


@dataclass(frozen=True, slots=True)
class _Statements:
    """A barrier table's statements, built once per table (every call binds parameters only)."""

    insert: TextClause
    insert_many: TextClause
    get: TextualSelect
    release: TextClause


def insert_many_sql(
    table_name: str,
    *,
    only_if: str | None = None,
    skip_conflicts: bool = True,
    read_first: bool = False,
) -> str:
    """The barrier's insert-first for a group of distinct branches, as SQL a participant may also
    put in a CTE in front of its own statement (one round trip for the barrier and its next step;
    the rows are written before the rest of the statement runs its locks). Binds :barrier_op,
    :barrier_origin, :barrier_global_tx_ids, :barrier_branch_ids, :barrier_fingerprints (see
    `insert_many_params`); returns (global_tx_id, branch_id) of each row it inserted. ON CONFLICT
    DO NOTHING waits for an in-flight twin exactly as the single insert does.

    `only_if`: an SQL condition of the participant's statement (e.g. a CTE's verdict, `(SELECT ok
    FROM verdict)`): the rows are inserted only if it holds, else none (and nothing is returned),
    so the barrier can come after the locks and checks it depends on, in the same statement.

    `skip_conflicts=False`: no ON CONFLICT clause, so a branch that has its row already fails the
    whole statement (a unique violation of the table's key, after waiting for an in-flight twin as
    ON CONFLICT does), for a participant whose statement then falls back to a path that answers
    such a branch. A speculative insertion (ON CONFLICT) probes the key's index before its insert
    and writes a third WAL record per row to confirm it: about 3 of a row's 6 buffer hits and 1
    of its 3 WAL records (issue 13).

    `read_first` (with `skip_conflicts=False`): each branch's row is looked for first (by its key,
    one index probe per branch whatever the table's statistics) and only the branches without one
    are inserted, plainly: a row committed before the statement began is skipped as ON CONFLICT
    skips it, while a twin still in flight then fails the statement on the key (the participant
    falls back). The probe reads what the speculative insertion's did, without its third WAL
    record per row."""
    conditions = [only_if] if only_if is not None else []
    taken = ""
    if read_first:
        taken = (
            " LEFT JOIN LATERAL (SELECT true AS taken FROM"
            f" {table_name} x WHERE x.global_tx_id = t.g AND x.branch_id = t.b"
            " AND x.op = CAST(:barrier_op AS text) LIMIT 1) x ON true"
        )
        conditions.append("x.taken IS NULL")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    conflicts = " ON CONFLICT DO NOTHING" if skip_conflicts else ""
    return (
        f"INSERT INTO {table_name} (global_tx_id, branch_id, op, origin, fingerprint)"
        " SELECT g, b, CAST(:barrier_op AS text), CAST(:barrier_origin AS text), f"
        f" FROM unnest({listed('barrier_global_tx_ids', 'text')},"
        f" {listed('barrier_branch_ids', 'text')}, {quoted('barrier_fingerprints', 'jsonb')})"
        f" AS t(g, b, f){taken}{where}{conflicts}"
        " RETURNING global_tx_id, branch_id"
    )


def insert_many_params(
    branches: Sequence[TccBranch],
    op: TccOp,
    origin: TccOp,
    fingerprints: Sequence[Fingerprint],
) -> dict[str, Any]:
    """The parameters of `insert_many_sql` (distinct branches). The ids go as one comma-joined
    string each (hirepay_platform.sql_lists): a validated branch's ids hold no comma
    (TccBranch.validated), and one that did would be refused here, not split apart."""
    if len(set(branches)) != len(branches):
        raise ValueError("a branch may appear once per call")
    return {
        "barrier_op": str(op),
        "barrier_origin": str(origin),
        "barrier_global_tx_ids": joined_checked([b.global_tx_id for b in branches]),
        "barrier_branch_ids": joined_checked([b.branch_id for b in branches]),
        # JSON documents hold commas: the text of an array literal (sql_lists.quoted_list).
        "barrier_fingerprints": quoted_list([jsonb.dumps(dict(f)) for f in fingerprints]),
    }


@functools.cache
def _statements(table_name: str) -> _Statements:
    return _Statements(
        insert=text(
            f"INSERT INTO {table_name} (global_tx_id, branch_id, op, origin, fingerprint)"
            " VALUES (:global_tx_id, :branch_id, :op, :origin, CAST(:fingerprint AS jsonb))"
            " ON CONFLICT DO NOTHING RETURNING op"
        ),
        # One round trip for a group of branches; ON CONFLICT DO NOTHING waits for an in-flight
        # twin exactly as the single insert does.
        insert_many=text(
            f"WITH entered AS ({insert_many_sql(table_name)})"
            " SELECT global_tx_id, branch_id FROM entered"
        ),
        get=text(
            f"SELECT origin, fingerprint FROM {table_name}"
            " WHERE global_tx_id = :global_tx_id AND branch_id = :branch_id AND op = :op"
        ).columns(origin=String(), fingerprint=JSONB()),
        release=text(
            f"DELETE FROM {table_name} WHERE op = :op AND (global_tx_id, branch_id) IN"
            f" (SELECT * FROM unnest({listed('global_tx_ids', 'text')},"
            f" {listed('branch_ids', 'text')}))"
        ),
    )


@functools.cache
def _guard_insert(table: Table, only_if: Select[Any] | None = None) -> UpdateBase:
    """The insert-first of one row as a write batch's guard (it returns the row it inserted);
    with `only_if` (a SELECT built once, FOR UPDATE to lock what it finds), the row is inserted
    only if that finds a row, which it runs first (its rows are locked before the insert)."""
    columns = ("global_tx_id", "branch_id", "op", "origin", "fingerprint")
    values = {c: bindparam(f"g_{c}", type_=table.c[c].type) for c in columns}
    if only_if is None:
        statement = pg_insert(table).values(values)
    else:
        statement = pg_insert(table).from_select(
            list(columns), select(*values.values()).where(only_if.exists())
        )
    return statement.on_conflict_do_nothing().returning(table.c.op)


class SqlBarrierRepository:
    """Barrier rows on the unit of work's session; never commits. Statements are built once per
    table and sent as text with bound parameters (no statement construction per call)."""

    def __init__(self, session: AsyncSession, table: Table) -> None:
        self._session = session
        self._table = table
        self._sql = _statements(table.name)

    async def insert(
        self, branch: TccBranch, op: TccOp, origin: TccOp, fingerprint: Fingerprint
    ) -> bool:
        result = await self._session.execute(
            self._sql.insert,
            {
                "global_tx_id": branch.global_tx_id,
                "branch_id": branch.branch_id,
                "op": str(op),
                "origin": str(origin),
                "fingerprint": jsonb.dumps(dict(fingerprint)),
            },
        )
        return result.scalar_one_or_none() is not None

    def insert_with_batch(
        self,
        branch: TccBranch,
        op: TccOp,
        origin: TccOp,
        fingerprint: Fingerprint,
        *,
        only_if: tuple[Select[Any], Mapping[str, Any]] | None = None,
    ) -> None:
        """`insert`, as the guard of the unit of work's held-back writes: one statement of its
        own that writes them only if the row is inserted (hirepay_platform.write_batch `guard`;
        the session must be a BatchedSession): a first call and its writes in one round trip
        (issue 13). If the row exists, the commit raises StaleRow and writes nothing: then redo
        the unit of work with `insert` (replay, mismatch, cancelled).

        `only_if`: a SELECT built once and its parameters (not named `g_*`), e.g. a row the unit
        of work assumed, locked FOR UPDATE: the barrier row (and so the writes) only if it finds
        a row, else StaleRow as well. Its rows are locked before the barrier row is inserted."""
        batch = getattr(self._session, "batch", None)
        if not isinstance(batch, WriteBatch):
            raise TypeError("insert_with_batch needs a BatchedSession")
        condition, condition_params = only_if if only_if is not None else (None, {})
        batch.guard(
            _guard_insert(self._table, condition),
            {
                **condition_params,
                "g_global_tx_id": branch.global_tx_id,
                "g_branch_id": branch.branch_id,
                "g_op": str(op),  # a StrEnum's value as a plain str (no property call)
                "g_origin": str(origin),
                "g_fingerprint": dict(fingerprint),
            },
        )

    async def insert_many(
        self,
        branches: Sequence[TccBranch],
        op: TccOp,
        origin: TccOp,
        fingerprints: Sequence[Fingerprint],
    ) -> set[TccBranch]:
        params = insert_many_params(branches, op, origin, fingerprints)
        if not branches:
            return set()
        result = await self._session.execute(self._sql.insert_many, params)
        return {TccBranch(row.global_tx_id, row.branch_id) for row in result}

    async def release(self, branches: Collection[TccBranch], op: TccOp) -> None:
        if not branches:
            return
        await self._session.execute(
            self._sql.release,
            {
                "op": str(op),
                "global_tx_ids": joined_checked([b.global_tx_id for b in branches]),
                "branch_ids": joined_checked([b.branch_id for b in branches]),
            },
        )

    async def get(self, branch: TccBranch, op: TccOp) -> BarrierRecord | None:
        row: Row[Any] | None = (
            await self._session.execute(
                self._sql.get,
                {
                    "global_tx_id": branch.global_tx_id,
                    "branch_id": branch.branch_id,
                    "op": str(op),
                },
            )
        ).one_or_none()
        if row is None:
            return None
        return BarrierRecord(branch, op, TccOp(row.origin), dict(row.fingerprint or {}))
