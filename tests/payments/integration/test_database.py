"""The payments schema on real PostgreSQL: the audit log is append-only, barriers are insert-first,
outbox cursors commit in order, and leases share due payments between workers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from hirepay_platform.db import create_engine, make_session_factory
from hirepay_platform.errors import Unavailable
from hirepay_platform.tcc import TccBranch, TccOp
from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain.events import AuditEntry, EventType, OutboxEvent
from payments.domain.model import Payment
from tests.support.payments_helpers import card_payment


def _payment(pid: str, gtx: str, *, due: datetime | None = None) -> Payment:
    return card_payment(pid, gtx, next_poll_at=due)


async def test_audit_log_refuses_update_and_delete(sessions) -> None:
    uow = SqlPaymentsUnitOfWork(sessions)
    async with uow:
        await uow.audit.add(
            AuditEntry("attempt", "saga", "authorize requested", {"k": "v"}, payment_id="pay_a")
        )
        await uow.commit()
    for statement in (
        "UPDATE audit_log SET reason = 'rewritten'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ):
        async with uow:
            with pytest.raises(DBAPIError, match="append-only"):
                await uow.session.execute(text(statement))
    async with uow:
        records = await uow.audit.list_for_payment("pay_a")
    assert [r.reason for r in records] == ["authorize requested"]


async def test_barrier_rows_are_insert_first(sessions) -> None:
    uow = SqlPaymentsUnitOfWork(sessions)
    branch = TccBranch("gtx-barrier", "payment")
    async with uow:
        assert await uow.barriers.insert(branch, TccOp.TRY, TccOp.CANCEL, {})
        assert not await uow.barriers.insert(branch, TccOp.TRY, TccOp.TRY, {"amount": "x"})
        record = await uow.barriers.get(branch, TccOp.TRY)
        assert record is not None and (record.origin, record.fingerprint) == (TccOp.CANCEL, {})
        await uow.commit()


async def test_a_unit_of_work_is_one_core_connection(sessions, engine: AsyncEngine) -> None:
    """A unit of work runs its statements on one Core connection of the pool, no ORM session
    (issue 13): what it does not commit is rolled back, what it commits stays, a self-committing
    unit of work commits its statement, and every connection goes back to the pool."""
    uow = SqlPaymentsUnitOfWork(sessions)
    async with uow:
        assert not isinstance(uow.session, AsyncSession)
        await uow.payments.add(_payment("pay_core_rb", "gtx-core-rb"))
        # The read sends the held-back insert first: written in the transaction, never committed.
        assert await uow.payments.get("pay_core_rb") is not None
    async with uow:
        await uow.payments.add(_payment("pay_core_ok", "gtx-core-ok"))
        await uow.commit()
    async with uow:
        await uow.autocommit()
        await uow.payments.add(_payment("pay_core_auto", "gtx-core-auto"))
        await uow.payments.get("pay_core_auto")  # the insert went alone: committed by itself
    async with uow:
        assert await uow.payments.get("pay_core_rb") is None
        assert await uow.payments.get("pay_core_ok") is not None
        assert await uow.payments.get("pay_core_auto") is not None
    assert engine.sync_engine.pool.checkedout() == 0


async def test_concurrent_outbox_writers_commit_cursors_in_order(sessions) -> None:
    """A reader that resumes after cursor N never misses an event committed later with a smaller
    cursor: what readers are given always forms a prefix of the cursors that will ever commit."""
    seen_gap = False

    async def writer(i: int) -> None:
        uow = SqlPaymentsUnitOfWork(sessions)
        async with uow:
            p = _payment(f"pay_w{i}", f"gtx-w{i}")
            await uow.payments.add(p)
            await uow.outbox.add(
                OutboxEvent(
                    f"evt_w{i}", EventType.PAYMENT_AUTHORIZED, p.created_at, "jobs", payment=p
                ),
                callback=False,
            )
            await asyncio.sleep(0.01 * (i % 3))
            await uow.commit()

    async def reader() -> None:
        nonlocal seen_gap
        seen: set[int] = set()
        last = 0
        for _ in range(60):
            uow = SqlPaymentsUnitOfWork(sessions)
            async with uow:
                cursors = [e.cursor for e in await uow.outbox.list_after(0, 1000)]
            # A cursor appearing at or below one already read would be skipped by a resume.
            if any(c <= last and c not in seen for c in cursors):
                seen_gap = True
            seen.update(cursors)
            last = max(cursors, default=last)
            await asyncio.sleep(0.002)

    await asyncio.gather(reader(), *(writer(i) for i in range(20)))
    uow = SqlPaymentsUnitOfWork(sessions)
    async with uow:
        events = await uow.outbox.list_after(0, 1000)
    mine = [e for e in events if e.event_id.startswith("evt_w")]
    assert len(mine) == 20 and not seen_gap
    assert mine[0].payment is not None and mine[0].payment.metadata == {"subsystem": "jobs"}


def _event(i: str) -> tuple[Payment, OutboxEvent]:
    p = _payment(f"pay_{i}", f"gtx-{i}")
    return p, OutboxEvent(f"evt_{i}", EventType.PAYMENT_AUTHORIZED, p.created_at, "jobs", payment=p)


async def test_an_event_committed_after_a_later_one_is_not_skipped(sessions) -> None:
    """Writers take no lock (issue 13): an event inserted first can commit after one inserted
    later. A consumer that resumes after the last cursor it was given still receives it, once."""
    uow = SqlPaymentsUnitOfWork(sessions)
    async with uow:
        start = max((e.cursor for e in await uow.outbox.list_after(0, 10_000)), default=0)
    slow, fast = SqlPaymentsUnitOfWork(sessions), SqlPaymentsUnitOfWork(sessions)
    async with slow:
        payment, event = _event("slow")
        await slow.payments.add(payment)
        await slow.outbox.add(event, callback=False)  # inserted first, committed last
        async with fast:
            payment, event = _event("fast")
            await fast.payments.add(payment)
            await fast.outbox.add(event, callback=False)
            await fast.commit()
        reader = SqlPaymentsUnitOfWork(sessions)
        async with reader:
            early = await reader.outbox.list_after(start, 1000)
        # A consumer stores the last cursor it was given and resumes after it.
        resume = max((e.cursor for e in early), default=start)
        await slow.commit()
    async with reader:
        late = await reader.outbox.list_after(resume, 1000)
    received = [e.event_id for e in early + late]
    assert [e.event_id for e in early] == ["evt_fast"]
    assert received == ["evt_fast", "evt_slow"]
    cursors = [e.cursor for e in early + late]
    assert cursors == sorted(set(cursors))


async def test_leases_share_due_payments_without_overlap(sessions) -> None:
    past = datetime.now(UTC) - timedelta(seconds=5)
    uow = SqlPaymentsUnitOfWork(sessions)
    async with uow:
        for i in range(10):
            await uow.payments.add(_payment(f"pay_l{i}", f"gtx-l{i}", due=past))
        await uow.commit()

    async def worker() -> list[str]:
        w = SqlPaymentsUnitOfWork(sessions)
        async with w:
            leased = await w.payments.lease_due(datetime.now(UTC), 4, 30)
            await asyncio.sleep(0.05)  # hold the row locks while the others look
            await w.commit()
        return [p.id for p in leased if p.id.startswith("pay_l")]

    results = await asyncio.gather(*(worker() for _ in range(4)))
    leased = [pid for r in results for pid in r]
    assert len(leased) == len(set(leased)) == 10
    async with uow:
        again = await uow.payments.lease_due(datetime.now(UTC), 50, 30)
    assert not [p for p in again if p.id.startswith("pay_l")]


async def test_an_unreachable_database_is_a_retryable_unavailable() -> None:
    engine = create_engine("postgresql://postgres@/postgres?host=/nonexistent-socket-dir")
    uow = SqlPaymentsUnitOfWork(make_session_factory(engine))
    with pytest.raises(Unavailable) as caught:
        async with uow:
            await uow.payments.get("pay_x")
    assert caught.value.reason == "DATABASE_UNAVAILABLE"
    await engine.dispose()
