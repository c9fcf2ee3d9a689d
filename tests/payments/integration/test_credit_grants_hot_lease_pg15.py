"""The booking worker's lease is a HOT update (issue 13, payments 0023): every posting's booking
is leased once, and a lease that moved `next_attempt_at` (the due index's key) was a new entry in
three indexes each time. The lease is now `lease_until` (no index); what it means is unchanged: a
leased booking is not due again until the lease ends, a retry is due at its own time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain.credits import CreditGrant
from tests.support.payments_helpers import paid_plan_transaction

# Far in the past: only this module's bookings are due at these times.
T0 = datetime(2001, 1, 1, tzinfo=UTC)

_UPDATES_IN_THIS_TRANSACTION = text(
    "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'credit_grants'"
)


def _ids(grants: list[CreditGrant], grant: CreditGrant) -> list[str]:
    """The ids of `grants` that are `grant` (an earlier test's booking, its lease over, is due at
    a later test's times too)."""
    return [g.id for g in grants if g.id == grant.id]


async def _owe(sessions, name: str, at: datetime) -> CreditGrant:
    grant = CreditGrant.issue(paid_plan_transaction(name), at)
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        assert await uow.credit_grants.add(grant) is True
        await uow.commit()
    return grant


async def test_the_lease_of_a_booking_is_a_hot_update(sessions) -> None:
    grant = await _owe(sessions, "txn_hot_lease", T0)
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        leased = await uow.credit_grants.lease_due(T0 + timedelta(seconds=1), 10, 30)
        assert [g.id for g in leased] == [grant.id]
        # This transaction's own counts (pg_stat_xact_*: before any statistics are reported).
        updated, hot = (await uow.session.execute(_UPDATES_IN_THIS_TRANSACTION)).one()
        await uow.commit()
    assert (updated, hot) == (1, 1)


async def test_a_leased_booking_is_not_due_again_until_its_lease_ends(sessions) -> None:
    at = T0 + timedelta(days=1)
    grant = await _owe(sessions, "txn_lease_held", at)
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        assert _ids(await uow.credit_grants.lease_due(at, 10, 30), grant) == [grant.id]
        await uow.commit()
    # Saved while leased (a revocation's plan is kept so): still leased.
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        fresh = await uow.credit_grants.get(grant.id, for_update=True)
        assert fresh is not None
        await uow.credit_grants.save(fresh)
        await uow.commit()
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        assert (
            _ids(await uow.credit_grants.lease_due(at + timedelta(seconds=29), 10, 30), grant) == []
        )
        again = await uow.credit_grants.lease_due(at + timedelta(seconds=31), 10, 30)
        await uow.commit()
    assert _ids(again, grant) == [grant.id]  # a worker that died mid-booking: taken again


async def test_a_retried_booking_is_due_at_its_retry_not_at_its_lease_end(sessions) -> None:
    at = T0 + timedelta(days=2)
    grant = await _owe(sessions, "txn_lease_retry", at)
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        (leased,) = [g for g in await uow.credit_grants.lease_due(at, 10, 30) if g.id == grant.id]
        await uow.commit()
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        leased.retry_later(at, 1.0, "UNAVAILABLE: the wallet did not answer")
        await uow.credit_grants.save(leased, release_lease=True)
        await uow.commit()
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        assert (
            _ids(await uow.credit_grants.lease_due(at + timedelta(seconds=0.5), 10, 30), grant)
            == []
        )
        due = await uow.credit_grants.lease_due(at + timedelta(seconds=2), 10, 30)
        await uow.commit()
    assert _ids(due, grant) == [grant.id]
