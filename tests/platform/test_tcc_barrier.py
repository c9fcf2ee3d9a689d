"""The one TCC barrier: the gates' answers to the three anomalies, in memory and on PostgreSQL
(including a Try and a Cancel of one branch racing in two transactions)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import MetaData

from hirepay_platform.barrier import SqlBarrierRepository, barrier_table
from hirepay_platform.db import Database, SqlAlchemyUnitOfWork, create_engine
from hirepay_platform.errors import ValidationError
from hirepay_platform.fingerprint import decode, digest, encode, fingerprint, first_mismatch
from hirepay_platform.tcc import (
    BarrierRecord,
    CancelGate,
    ConfirmGate,
    IdempotencyMismatch,
    TccBranch,
    TccOp,
    TryGate,
    cancelled_before_try,
    enter_cancel,
    enter_confirm,
    enter_try,
)
from tests.support.barrier_fakes import MemoryBarriers

B = TccBranch("gtx-1", "payment")


def test_fingerprint_names_the_first_differing_field() -> None:
    a = fingerprint({"amount": [100, "USD"], "owner": "u1"})
    b = fingerprint({"amount": [101, "USD"], "owner": "u1"})
    assert first_mismatch(a, a) is None
    assert first_mismatch(a, b) == "amount"
    assert first_mismatch(a, {"amount": a["amount"]}) == "owner"
    assert decode(encode(a)) == a
    assert decode("") == {} and decode("not json") == {} and decode("[1]") == {}
    # Canonical: key order does not matter, values do.
    assert digest({"x": 1, "y": [1, 2]}) == digest({"y": [1, 2], "x": 1})
    assert digest({"x": 1}) != digest({"x": "1"})


@pytest.mark.parametrize("bad", ["", "a:b", "a/b", "x" * 129, "a b", "é"])
def test_branch_ids_are_validated(bad: str) -> None:
    with pytest.raises(ValidationError):
        TccBranch(bad, "b").validated()
    with pytest.raises(ValidationError):
        TccBranch("g", bad).validated()
    assert TccBranch("saga_1.x@y-z", "b").validated().key("try") == "saga_1.x@y-z:b:try"


async def test_try_then_replay_then_mismatch() -> None:
    barriers = MemoryBarriers()
    p = fingerprint({"amount": 100})
    assert await enter_try(barriers, B, p) is TryGate.FIRST
    assert await enter_try(barriers, B, p) is TryGate.REPLAY
    with pytest.raises(IdempotencyMismatch) as err:
        await enter_try(barriers, B, fingerprint({"amount": 200}))
    assert err.value.metadata["field"] == "amount"


async def test_cancel_before_try_is_a_null_compensation_and_the_late_try_hangs() -> None:
    barriers = MemoryBarriers()
    assert await enter_cancel(barriers, B) is CancelGate.NULL_COMPENSATION
    assert await cancelled_before_try(barriers, B)
    assert await enter_try(barriers, B, fingerprint({"amount": 100})) is TryGate.CANCELLED
    assert await enter_cancel(barriers, B) is CancelGate.REPLAY


async def test_cancel_after_try_releases_once_and_confirm_replays() -> None:
    barriers = MemoryBarriers()
    p = fingerprint({"amount": 100})
    assert await enter_try(barriers, B, p) is TryGate.FIRST
    assert not await cancelled_before_try(barriers, B)
    assert await enter_cancel(barriers, B) is CancelGate.FIRST
    assert await enter_cancel(barriers, B) is CancelGate.REPLAY
    c = fingerprint({"amount": 50})
    assert await enter_confirm(barriers, B, c) is ConfirmGate.FIRST
    assert await enter_confirm(barriers, B, c) is ConfirmGate.REPLAY
    with pytest.raises(IdempotencyMismatch):
        await enter_confirm(barriers, B, fingerprint({"amount": 60}))


TABLE = barrier_table(MetaData())


@pytest.fixture(scope="module")
async def barrier_db(make_database) -> Database[SqlAlchemyUnitOfWork]:
    url = make_database("barrier")
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(TABLE.metadata.create_all)
    await engine.dispose()
    db = Database(url, SqlAlchemyUnitOfWork, probe_table="tcc_barriers")
    await db.start()
    yield db
    await db.stop()


async def test_sql_barrier_round_trip(barrier_db: Database[SqlAlchemyUnitOfWork]) -> None:
    branch = TccBranch("gtx-sql", "wallet")
    p = fingerprint({"amount": [100, "USD"]})
    async with barrier_db.uow() as uow:
        barriers = SqlBarrierRepository(uow.session, TABLE)
        assert await enter_try(barriers, branch, p) is TryGate.FIRST
        await uow.commit()
    async with barrier_db.uow() as uow:
        barriers = SqlBarrierRepository(uow.session, TABLE)
        assert await enter_try(barriers, branch, p) is TryGate.REPLAY
        record = await barriers.get(branch, TccOp.TRY)
        assert record == BarrierRecord(branch, TccOp.TRY, TccOp.TRY, p)
        assert await enter_cancel(barriers, branch) is CancelGate.FIRST
        await uow.commit()
    async with barrier_db.uow() as uow:
        barriers = SqlBarrierRepository(uow.session, TABLE)
        assert await enter_cancel(barriers, branch) is CancelGate.REPLAY


async def test_sql_try_racing_cancel_one_wins(barrier_db: Database[SqlAlchemyUnitOfWork]) -> None:
    """A Try and a Cancel of one branch in two concurrent transactions: whichever inserts the try
    row first decides; the Try never reserves after a null compensation."""
    for round_ in range(20):
        branch = TccBranch(f"gtx-race-{round_}", "wallet")
        outcomes: dict[str, object] = {}

        async def try_(branch: TccBranch = branch, outcomes: dict = outcomes) -> None:
            async with barrier_db.uow() as uow:
                barriers = SqlBarrierRepository(uow.session, TABLE)
                try:
                    outcomes["try"] = await enter_try(barriers, branch, {"a": "1"})
                except Exception as error:  # a lost race is a retryable Conflict
                    outcomes["try"] = type(error).__name__
                await uow.commit()

        async def cancel(branch: TccBranch = branch, outcomes: dict = outcomes) -> None:
            async with barrier_db.uow() as uow:
                barriers = SqlBarrierRepository(uow.session, TABLE)
                outcomes["cancel"] = await enter_cancel(barriers, branch)
                await uow.commit()

        await asyncio.gather(try_(), cancel())
        if outcomes["cancel"] is CancelGate.NULL_COMPENSATION:
            assert outcomes["try"] in (TryGate.CANCELLED, "Conflict")
        else:
            assert outcomes["cancel"] is CancelGate.FIRST
            assert outcomes["try"] is TryGate.FIRST
