"""The one Try-Confirm-Cancel barrier, SQL part: the table every participant declares and the
repository that writes it insert-first (see hirepay_platform.tcc for the rules)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    MetaData,
    PrimaryKeyConstraint,
    Row,
    String,
    Table,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession

from hirepay_platform.fingerprint import Fingerprint
from hirepay_platform.tcc import BarrierRecord, TccBranch, TccOp

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


class SqlBarrierRepository:
    """Barrier rows on the unit of work's session; never commits."""

    def __init__(self, session: AsyncSession, table: Table) -> None:
        self._session = session
        self._table = table

    async def insert(
        self, branch: TccBranch, op: TccOp, origin: TccOp, fingerprint: Fingerprint
    ) -> bool:
        t = self._table
        statement = (
            insert(t)
            .values(
                global_tx_id=branch.global_tx_id,
                branch_id=branch.branch_id,
                op=op.value,
                origin=origin.value,
                fingerprint=dict(fingerprint),
            )
            .on_conflict_do_nothing()
            .returning(t.c.op)
        )
        return (await self._session.execute(statement)).scalar_one_or_none() is not None

    async def get(self, branch: TccBranch, op: TccOp) -> BarrierRecord | None:
        t = self._table
        query = select(t.c.origin, t.c.fingerprint).where(
            t.c.global_tx_id == branch.global_tx_id,
            t.c.branch_id == branch.branch_id,
            t.c.op == op.value,
        )
        row: Row[Any] | None = (await self._session.execute(query)).one_or_none()
        if row is None:
            return None
        return BarrierRecord(branch, op, TccOp(row.origin), dict(row.fingerprint or {}))
