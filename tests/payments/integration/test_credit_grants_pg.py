"""Credit grants on real PostgreSQL: recorded once per purchase and kind (insert-first), planned
amounts kept, and due grants shared between workers without one being leased twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain.credits import CANDIDATE_CREDIT, JOB_CREDIT, CreditGrant, GrantStatus
from tests.support.payments_helpers import paid_plan_transaction


async def test_a_grant_is_recorded_once_and_keeps_its_plan(sessions) -> None:
    now = datetime.now(UTC)
    txn = paid_plan_transaction("txn_once")
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        assert await uow.credit_grants.add(CreditGrant.issue(txn, now)) is True
        assert await uow.credit_grants.add(CreditGrant.issue(txn, now)) is False
        revoke = CreditGrant.revoke(txn, now)
        assert await uow.credit_grants.add(revoke) is True
        await uow.commit()
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        issue, revoked = await uow.credit_grants.for_transaction("txn_once")
        assert issue.amounts == {"USD": 4900, JOB_CREDIT: 2500, CANDIDATE_CREDIT: 50}
        assert revoked.amounts is None  # planned later, from the unused balance
        revoked.plan_revocation({JOB_CREDIT: 1000, CANDIDATE_CREDIT: 50})
        revoked.done(now)
        await uow.credit_grants.save(revoked)
        await uow.commit()
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        stored = await uow.credit_grants.get(revoked.id)
        assert stored is not None and stored.status is GrantStatus.DONE
        assert stored.used == {JOB_CREDIT: 1500, CANDIDATE_CREDIT: 0}


async def test_workers_share_due_grants_without_doubles(sessions) -> None:
    now = datetime.now(UTC)
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        for n in range(12):
            await uow.credit_grants.add(
                CreditGrant.issue(paid_plan_transaction(f"txn_lease_{n}"), now)
            )
        await uow.commit()

    async def lease() -> list[str]:
        async with SqlPaymentsUnitOfWork(sessions) as uow:
            due = await uow.credit_grants.lease_due(now + timedelta(seconds=1), 4, 30)
            await asyncio.sleep(0.05)  # hold the row locks while the others lease
            await uow.commit()
        return [g.id for g in due]

    leased = await asyncio.gather(*[lease() for _ in range(5)])
    ids = [grant_id for batch in leased for grant_id in batch if "txn_lease_" in grant_id]
    assert len(ids) == len(set(ids)) == 12
    async with SqlPaymentsUnitOfWork(sessions) as uow:  # leased: not due again until it ends
        assert await uow.credit_grants.lease_due(now + timedelta(seconds=1), 50, 30) == []
