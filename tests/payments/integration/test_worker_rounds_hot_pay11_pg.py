"""The workers' rounds past SQLAlchemy's execution once warm (issue 13): the poller's leases of
payments and refunds, the booking worker's lease and mark-done, the withdrawals' lease. Each is a
hot statement (hirepay_platform.db.HotStatement): SQLAlchemy runs it once, later rounds go
straight to the unit of work's asyncpg connection (in autocommit: no SQLAlchemy Connection for the
round either). On main the refunds' lease (an expanding IN list of coin states) and the bookings'
mark-done (an expanding IN list of ids) went through SQLAlchemy on every round, and the other
leases were not hot. What each lease takes is unchanged (a due refund of each kind is leased)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Connection

from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain.credits import CreditGrant
from payments.domain.refunds import CoinsState, Refund, RefundStatus
from tests.support.payments_helpers import card_payment, paid_plan_transaction


@pytest.fixture
def through_sqlalchemy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements SQLAlchemy's own execution ran."""
    ran: list[str] = []
    execute_context = Connection._execute_context

    def counted(
        self: Connection, dialect: Any, constructor: Any, statement: Any, *a: Any, **kw: Any
    ) -> Any:
        ran.append(" ".join(str(statement).split()))
        return execute_context(self, dialect, constructor, statement, *a, **kw)

    monkeypatch.setattr(Connection, "_execute_context", counted)
    return ran


async def _round(sessions, now: datetime) -> tuple[list[str], list[str]]:
    """One round of each worker's statements, each unit of work in autocommit as the workers'."""
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        await uow.autocommit()
        payments = await uow.payments.lease_due(now, 10, 30)
        refunds = await uow.refunds.lease_due(now, 10, 30)
        await uow.commit()
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        await uow.autocommit()
        await uow.credit_grants.lease_due(now, 10, 30)
        await uow.commit()
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        await uow.autocommit()
        await uow.payouts.lease_due(now, 10, 30, now - timedelta(days=10))
        await uow.commit()
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        nobody = CreditGrant.issue(paid_plan_transaction("txn_nobody"), now)
        await uow.credit_grants.mark_done([nobody], now)
        await uow.commit()
    return [p.id for p in payments], [r.id for r in refunds]


def _refund(rid: str, payment_id: str, status: RefundStatus, coins: CoinsState, at: datetime):
    return Refund(
        id=rid,
        payment_id=payment_id,
        request_id=f"req-{rid}",
        amount_minor=100,
        requested_minor=100,
        currency="USD",
        reason="requested_by_customer",
        status=status,
        idempotency_key=f"refund:{rid}",
        created_at=at,
        updated_at=at,
        next_poll_at=at,
        coins_state=coins,
    )


async def test_worker_rounds_run_hot_once_warm(sessions, through_sqlalchemy) -> None:
    far = datetime.now(UTC) + timedelta(days=3650)  # due now: only this test's rows
    for _ in range(2):  # warm: each statement's first run goes through SQLAlchemy
        await _round(sessions, far - timedelta(days=1))
    through_sqlalchemy.clear()
    leased = await _round(sessions, far - timedelta(days=1))
    assert through_sqlalchemy == []  # every statement of the round ran hot
    assert leased == ([], [])

    # The leases still take what is due, each kind of due refund included.
    at = far - timedelta(hours=1)
    payment = card_payment("pay_hot_1", "gtx_hot_1", at=at, next_poll_at=at)
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        await uow.payments.add(payment)
        for rid, status, coins in (
            ("rfd_hot_pending", RefundStatus.PENDING, CoinsState.NONE),
            ("rfd_hot_reserving", RefundStatus.SUCCEEDED, CoinsState.RESERVING),
            ("rfd_hot_held", RefundStatus.FAILED, CoinsState.HELD),
            ("rfd_hot_done", RefundStatus.SUCCEEDED, CoinsState.TAKEN),
        ):
            await uow.refunds.add(_refund(rid, payment.id, status, coins, at))
        await uow.commit()
    through_sqlalchemy.clear()
    payments, refunds = await _round(sessions, far)
    assert payments == ["pay_hot_1"]
    assert sorted(refunds) == ["rfd_hot_held", "rfd_hot_pending", "rfd_hot_reserving"]
    assert through_sqlalchemy == []
