"""The barrier's branch ids bound as one comma-joined string each (hirepay_platform.sql_lists,
issue 13): a validated branch's ids can hold no comma, a value that would be split apart is
refused rather than sent, and on PostgreSQL the group insert-first and release write and delete
exactly the rows their arrays did."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hirepay_platform.barrier import SqlBarrierRepository, insert_many_params
from hirepay_platform.db import Database, SqlAlchemyUnitOfWork
from hirepay_platform.errors import ValidationError
from hirepay_platform.fingerprint import fingerprint
from hirepay_platform.sql_lists import joined_checked
from hirepay_platform.tcc import TccBranch, TccOp
from tests.platform.test_tcc_barrier import (
    TABLE,
    barrier_db,  # noqa: F401 (a fixture)
)


def test_a_validated_branch_id_never_holds_the_separator() -> None:
    for bad in ("a,b", ",", "a,"):
        with pytest.raises(ValidationError):
            TccBranch(bad, "b").validated()
        with pytest.raises(ValidationError):
            TccBranch("g", bad).validated()


def test_joined_checked_refuses_what_postgresql_would_split_otherwise() -> None:
    assert joined_checked([]) == ""
    assert joined_checked(["a"]) == "a"
    assert joined_checked(["g-1.x@y_z", "b"]) == "g-1.x@y_z,b"
    for bad in (["a,b"], ["a", "b,c"], [","], [""]):
        with pytest.raises(ValueError):
            joined_checked(bad)
    with pytest.raises(ValueError):
        insert_many_params([TccBranch("g", "a,b")], TccOp.TRY, TccOp.TRY, [{}])


async def _rows(db: Database[SqlAlchemyUnitOfWork]) -> set[tuple[str, str, str]]:
    assert db.engine is not None
    async with db.engine.connect() as conn:
        found = await conn.execute(select(TABLE.c.global_tx_id, TABLE.c.branch_id, TABLE.c.op))
        return {(g, b, op) for g, b, op in found}


async def test_insert_many_and_release_write_and_delete_exactly_their_branches(
    barrier_db: Database[SqlAlchemyUnitOfWork],  # noqa: F811 (the fixture)
) -> None:
    branches = [TccBranch("gtx.l@1", "leg-a"), TccBranch("gtx.l@1", "leg_b"), TccBranch("g2", "x")]
    prints = [fingerprint({"n": n, "s": "a,b"}) for n in range(3)]  # JSON keeps its commas
    async with barrier_db.uow() as uow:
        barriers = SqlBarrierRepository(uow.session, TABLE)
        assert await barriers.insert_many(branches, TccOp.TRY, TccOp.TRY, prints) == set(branches)
        assert await barriers.insert_many([branches[0]], TccOp.TRY, TccOp.TRY, prints[:1]) == set()
        assert await barriers.insert_many([], TccOp.TRY, TccOp.TRY, []) == set()
        await uow.commit()
    assert await _rows(barrier_db) == {(b.global_tx_id, b.branch_id, "try") for b in branches}
    async with barrier_db.uow() as uow:
        barriers = SqlBarrierRepository(uow.session, TABLE)
        record = await barriers.get(branches[1], TccOp.TRY)
        assert record is not None and record.fingerprint == prints[1]
        await barriers.release([branches[0], branches[2]], TccOp.TRY)
        await uow.commit()
    assert await _rows(barrier_db) == {("gtx.l@1", "leg_b", "try")}
