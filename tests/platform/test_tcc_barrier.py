"""The one TCC barrier: the gates' answers to the three anomalies, in memory and on PostgreSQL
(including a Try and a Cancel of one branch racing in two transactions), and its insert-first
with a condition (`only_if`): as a write batch's guard and as SQL inside a participant's
statement."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Column, MetaData, String, Table, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from hirepay_platform.barrier import (
    SqlBarrierRepository,
    barrier_table,
    insert_many_params,
    insert_many_sql,
)
from hirepay_platform.db import Database, SqlAlchemyUnitOfWork, create_engine
from hirepay_platform.errors import StaleRow, ValidationError
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
from hirepay_platform.write_batch import BatchedSession
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


def test_fingerprint_of_a_field_is_its_digest_whatever_was_digested_before() -> None:
    """Scalars and empty containers are digested once per process (issue 13): each field's digest
    is still the first 32 characters of its canonical JSON's sha256, so stored fingerprints keep
    matching, and values that are equal in Python but not in JSON are never confused."""
    values: list[object] = ["", "Transfer", 0, 1, True, False, None, [], (), {}, [1], {"a": "b"}]
    for _ in range(2):  # the second round is answered from the cache
        for value in values:
            assert fingerprint({"f": value})["f"] == digest(value)[:32]
    assert fingerprint({"f": True}) != fingerprint({"f": 1})
    assert fingerprint({"f": False}) != fingerprint({"f": 0})
    assert fingerprint({"f": []}) != fingerprint({"f": {}})
    assert fingerprint({"f": 0.0}) != fingerprint({"f": -0.0})
    assert list(fingerprint({"b": 1, "a": ""})) == ["b", "a"]  # the order of comparison


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


# --- the insert-first with a condition (only_if) -------------------------------------------------

ORDERS = Table(
    "orders",
    TABLE.metadata,
    Column("id", String(32), primary_key=True),
    Column("state", String(16), nullable=False),
)
# As a participant builds it: once, the row locked if it is still in the state the unit of work
# read it in.
STILL_OPEN = (
    select(ORDERS.c.id)
    .where(ORDERS.c.id == bindparam("o_id"), ORDERS.c.state == bindparam("o_state"))
    .with_for_update()
)


class BatchedBarrierUnitOfWork(SqlAlchemyUnitOfWork):
    """A participant's unit of work whose writes wait in a batch, as payments' does: a guarded
    batch goes at the commit as one statement of its own, or not at all (StaleRow)."""

    def _attach(self, session: AsyncSession) -> None:
        self.batched = BatchedSession(session)
        self.barriers = SqlBarrierRepository(self.batched, TABLE)  # type: ignore[arg-type]

    async def commit(self) -> None:
        batch = self.batched.batch
        if batch.guarded:
            await batch.flush_guarded()
        else:
            await batch.flush()
        await super().commit()


@pytest.fixture(scope="module")
async def batched_db(make_database) -> Database[BatchedBarrierUnitOfWork]:
    url = make_database("barrier_batch")
    db = Database(url, BatchedBarrierUnitOfWork, probe_table="orders")
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(TABLE.metadata.create_all)
    await engine.dispose()
    await db.start()
    yield db
    await db.stop()


async def _open_order(db: Database[BatchedBarrierUnitOfWork], order_id: str) -> None:
    assert db.engine is not None
    async with db.engine.begin() as conn:
        await conn.execute(ORDERS.insert().values(id=order_id, state="open"))


async def _state(db: Database[BatchedBarrierUnitOfWork], order_id: str) -> str:
    assert db.engine is not None
    async with db.engine.connect() as conn:
        found = await conn.execute(select(ORDERS.c.state).where(ORDERS.c.id == order_id))
        return str(found.scalar_one())


async def _barrier_rows(db: Database[BatchedBarrierUnitOfWork], branch: TccBranch) -> list[str]:
    assert db.engine is not None
    async with db.engine.connect() as conn:
        found = await conn.execute(
            select(TABLE.c.op).where(
                TABLE.c.global_tx_id == branch.global_tx_id, TABLE.c.branch_id == branch.branch_id
            )
        )
        return [str(op) for op in found.scalars()]


async def _capture(
    db: Database[BatchedBarrierUnitOfWork], branch: TccBranch, order_id: str, seen: str, to: str
) -> None:
    """A Confirm that read the order in state `seen` and writes it as `to` with its barrier row:
    one statement at the commit, only if the row is new and the order still as seen."""
    async with db.uow() as uow:
        uow.barriers.insert_with_batch(
            branch,
            TccOp.CONFIRM,
            TccOp.CONFIRM,
            fingerprint({"order": order_id}),
            only_if=(STILL_OPEN, {"o_id": order_id, "o_state": seen}),
        )
        await uow.batched.batch.update(ORDERS, {"id": order_id, "state": to})
        await uow.commit()


async def test_insert_with_batch_only_if_writes_row_and_batch_only_while_the_condition_holds(
    batched_db: Database[BatchedBarrierUnitOfWork],
) -> None:
    first, second = TccBranch("gtx-only-if-1", "payment"), TccBranch("gtx-only-if-2", "payment")
    await _open_order(batched_db, "order-1")
    await _capture(batched_db, first, "order-1", "open", "captured")
    assert await _barrier_rows(batched_db, first) == ["confirm"]
    assert await _state(batched_db, "order-1") == "captured"
    # The order is no longer as this unit of work read it: no barrier row, no write.
    with pytest.raises(StaleRow):
        await _capture(batched_db, second, "order-1", "open", "refunded")
    assert await _barrier_rows(batched_db, second) == []
    assert await _state(batched_db, "order-1") == "captured"
    # The condition holds but the branch has its row already (a repeat): nothing written either.
    with pytest.raises(StaleRow):
        await _capture(batched_db, first, "order-1", "captured", "refunded")
    assert await _barrier_rows(batched_db, first) == ["confirm"]
    assert await _state(batched_db, "order-1") == "captured"


async def test_concurrent_guarded_confirms_of_one_order_write_once(
    batched_db: Database[BatchedBarrierUnitOfWork],
) -> None:
    """Two branches confirming one open order at the same time, each guarded on the order as
    read: the order's lock orders them, and the second finds it changed (StaleRow, no row)."""
    for round_ in range(10):
        order = f"order-race-{round_}"
        await _open_order(batched_db, order)
        branches = [TccBranch(f"gtx-race-{round_}-{n}", "payment") for n in range(2)]
        outcomes = await asyncio.gather(
            *(_capture(batched_db, b, order, "open", f"by-{n}") for n, b in enumerate(branches)),
            return_exceptions=True,
        )
        assert sorted(type(o).__name__ for o in outcomes) == ["NoneType", "StaleRow"]
        winner = outcomes.index(None)
        assert await _state(batched_db, order) == f"by-{winner}"
        assert await _barrier_rows(batched_db, branches[winner]) == ["confirm"]
        assert await _barrier_rows(batched_db, branches[1 - winner]) == []


async def test_insert_many_sql_only_if_inserts_every_row_or_none(
    batched_db: Database[BatchedBarrierUnitOfWork],
) -> None:
    """In a participant's statement, the rows go in only if its condition holds."""
    statement = text(
        f"WITH entered AS ({insert_many_sql(TABLE.name, only_if='CAST(:go AS boolean)')})"
        " SELECT global_tx_id, branch_id FROM entered"
    )
    branches = [TccBranch("gtx-many-only-if", f"leg-{n}") for n in range(3)]
    params = insert_many_params(
        branches, TccOp.TRY, TccOp.TRY, [fingerprint({"n": n}) for n in range(3)]
    )
    async with batched_db.uow() as uow:
        refused = await uow.session.execute(statement, {**params, "go": False})
        assert refused.all() == []
        await uow.commit()
    assert [await _barrier_rows(batched_db, b) for b in branches] == [[], [], []]
    async with batched_db.uow() as uow:
        entered = await uow.session.execute(statement, {**params, "go": True})
        assert {TccBranch(*row) for row in entered} == set(branches)
        await uow.commit()
    assert [await _barrier_rows(batched_db, b) for b in branches] == [["try"]] * 3
