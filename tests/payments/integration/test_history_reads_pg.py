"""Periodic reads that must not grow with history go through their indexes (issue 13): the
provider reconciliation's most recently changed payments (`ix_payments_updated_at`; the
consistency auditor asks for it every minute, and without the index every payment ever made was
read and sorted to keep the newest few), and the callback relay's due rows
(`ix_outbox_callbacks_due`; without it the generic plan walked every outbox row in cursor order),
and the booking worker's pending grants (`ix_credit_grants_due`, partial: its condition must be
literal in the lease, or a generic plan reads and sorts every grant ever made), and the
withdrawal worker's unfinished and watched withdrawals (`ix_withdrawals_due`,
`ix_withdrawals_paid_watch`).
Each statement as the service sends it is planned generically with sequential scans off: a plan
that cannot use its index still shows its scan and its sort."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from payments.adapters.tables import PAID_WITHDRAWAL, PENDING_GRANT, UNFINISHED_WITHDRAWAL
from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain.credits import GrantStatus
from payments.domain.payouts import ProviderOutcome, WithdrawalState
from tests.support.pg_plans import generic_plan, planning


async def _plan(database_url: str, sql: str) -> str:
    async with planning(database_url) as connection:
        return await generic_plan(connection, sql)


async def test_recently_changed_payments_are_read_through_their_index(
    database_url, sessions, round_trips
):
    round_trips.sent.clear()
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        await uow.payments.recently_changed(100)
    read = next(sql for _, sql in round_trips.sent if "FROM payments ORDER BY" in sql)

    plan = await _plan(database_url, read)
    assert "Index Scan Backward using ix_payments_updated_at" in plan, plan
    assert "Sort" not in plan and "Seq Scan" not in plan, plan


async def test_the_callback_relay_reads_due_rows_through_their_index(
    database_url, sessions, round_trips
):
    round_trips.sent.clear()
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        await uow.outbox.lease_callbacks(datetime.now(UTC), 50, 30.0)
    lease = next(sql for _, sql in round_trips.sent if "callback_next_at <=" in sql)

    plan = await _plan(database_url, lease)
    assert "Index Scan using ix_outbox_callbacks_due" in plan, plan
    assert "outbox_pkey" not in plan and "Sort" not in plan, plan


def test_the_pending_grant_condition_names_the_pending_status() -> None:
    assert PENDING_GRANT.text == f"status = '{GrantStatus.PENDING.value}'"


async def test_the_booking_worker_leases_pending_grants_through_their_index(
    database_url, sessions, round_trips
):
    round_trips.sent.clear()
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        await uow.credit_grants.lease_due(datetime.now(UTC), 50, 30.0)
        await uow.commit()
    lease = next(sql for _, sql in round_trips.sent if "FROM credit_grants" in sql)

    plan = await _plan(database_url, lease)
    assert "ix_credit_grants_due" in plan and "Seq Scan on credit_grants" not in plan, plan


async def test_the_withdrawal_worker_leases_unfinished_and_watched_withdrawals_by_index(
    database_url, sessions, round_trips
):
    round_trips.sent.clear()
    now = datetime.now(UTC)
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        await uow.payouts.lease_due(now, 50, 30.0, now)
        await uow.commit()
    lease = next(sql for _, sql in round_trips.sent if "FROM withdrawals" in sql)

    plan = await _plan(database_url, lease)
    assert "ix_withdrawals_due" in plan and "ix_withdrawals_paid_watch" in plan, plan
    assert "Seq Scan on withdrawals" not in plan, plan


def test_the_withdrawal_conditions_name_the_states_the_domain_names() -> None:
    open_states = {s.value for s in WithdrawalState if not s.final}
    assert set(re.findall(r"'(\w+)'", UNFINISHED_WITHDRAWAL.text.split(" OR ")[0])) == open_states
    assert f"state = '{WithdrawalState.PAID.value}'" in UNFINISHED_WITHDRAWAL.text
    assert f"outcome = '{ProviderOutcome.RETURNED.value}'" in UNFINISHED_WITHDRAWAL.text
    assert PAID_WITHDRAWAL.text == (
        f"(state = '{WithdrawalState.PAID.value}' AND outcome = '{ProviderOutcome.PAID.value}')"
    )
