"""The provider reconciliation's sweep on PostgreSQL (OPS-3, payments migration 0018): rounds of a
small window pass through every payment with a provider id changed within the horizon, a bounded
batch a round from the durable cursor (`payment_reconciliation_sweep`), through
`ix_payments_updated_at`; a payment's provider unreadable is recorded since its first such check;
open records are read with the last checks in one statement (`ix_payment_reconciliations_open`)
and never forgotten; the migration goes down and up cleanly."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from typing import Any

import asyncpg
from alembic import command

from hirepay_dev.pg import libpq_url
from hirepay_dev.services import SPECS
from hirepay_platform.migrations import alembic_config
from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain import commands
from payments.domain.provider import ProviderPayment, ProviderStatus
from payments.domain.reconciliation import LastCheck, MismatchKind, SweepCursor
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import audit
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import Clock, FakeProvider
from tests.support.pg_plans import generic_plan, planning

IN_HORIZON = 150  # changed 100 days before the rounds: the sweep's
OLD = 20  # changed 200 days before: final long ago, past the 120 days' horizon
NO_PROVIDER_ID = 10  # never reached the provider: nothing to compare
PER_ROUND = 40
WINDOW = 5
NOW = Clock().now


class _Agreeing(FakeProvider):
    """A provider whose every payment agrees with ours (authorized, 2500), counting reads."""

    def __init__(self) -> None:
        super().__init__()
        self.read: list[str] = []

    async def retrieve_payment(self, intent_id: str) -> ProviderPayment:
        self.read.append(intent_id)
        return ProviderPayment(intent_id, ProviderStatus.AUTHORIZED, 2500, "USD", 2500)


async def fill_database(connection: asyncpg.Connection) -> None:
    """Payments changed within the horizon, older ones, and some with no provider id."""
    insert = """
        INSERT INTO payments (id, global_tx_id, branch_id, owner_id, amount_minor, currency,
                              method, provider, state, provider_payment_id, metadata,
                              created_at, updated_at)
        SELECT $1 || lpad(n::text, 6, '0'), $1 || n, 'payment', 'company-1', 2500, 'USD',
               'CARD', 'stripe', 'AUTHORIZED', CASE WHEN $4 THEN 'pi_' || $1 || n END, '{}',
               $3::timestamptz + n * interval '1 minute', $3::timestamptz + n * interval '1 minute'
        FROM generate_series(1, $2) AS n
    """
    await connection.execute(insert, "new_", IN_HORIZON, NOW - timedelta(days=100), True)
    await connection.execute(insert, "old_", OLD, NOW - timedelta(days=200), True)
    await connection.execute(insert, "nop_", NO_PROVIDER_ID, NOW - timedelta(days=99), False)
    await connection.execute("ANALYZE payments")


async def test_rounds_pass_through_every_payment_within_the_horizon_a_batch_at_a_time(
    database_url, sessions, round_trips
):
    clock, provider = Clock(), _Agreeing()
    policy = Policy(
        provider_timeout=1, reconcile_sweep_per_round=PER_ROUND, reconcile_reads_per_second=1000
    )

    def new_deps() -> Deps:
        return Deps(SqlPaymentsUnitOfWork(sessions), ProviderRegistry([provider]), policy, clock)

    rounds = math.ceil(IN_HORIZON / PER_ROUND)
    statements: list[str] = []
    for _ in range(rounds):
        clock.advance(60)
        before = len(provider.read)
        with round_trips:
            result = await audit.reconcile_provider(
                commands.ReconcileProvider(limit=WINDOW), new_deps
            )
        statements += round_trips.statements
        assert result.mismatches == [] and result.left == 0
        assert len(provider.read) - before <= PER_ROUND + WINDOW  # its share, never all
    read = set(provider.read)
    assert read == {f"pi_new_{n}" for n in range(1, IN_HORIZON + 1)}
    async with planning(database_url) as connection:
        cursor = await connection.fetchrow("SELECT * FROM payment_reconciliation_sweep")
        # The pass is over: the next one began with the last round.
        assert cursor["after_id"] is None and cursor["pass_started_at"] == clock.now
        # The sweep's read walks ix_payments_updated_at from the cursor, whatever the history.
        (sweep,) = [s for s in statements if "FROM payments" in s and "updated_at <" in s][:1]
        plan = await generic_plan(connection, sweep)
    assert "ix_payments_updated_at" in plan and "Seq Scan" not in plan, plan
    # And the next pass reads them again, from the oldest.
    clock.advance(60)
    again = len(provider.read)
    await audit.reconcile_provider(commands.ReconcileProvider(limit=WINDOW), new_deps)
    assert provider.read[again:][:PER_ROUND] == [f"pi_new_{n}" for n in range(1, PER_ROUND + 1)]


async def test_the_cursor_is_one_row_written_and_read_back(sessions):
    cursor = SweepCursor(NOW, (NOW - timedelta(days=3), "new_000007"))
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        await uow.reconciliations.save_sweep(cursor)
        await uow.reconciliations.save_sweep(cursor)
        await uow.commit()
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        assert await uow.reconciliations.sweep_cursor() == cursor
        batch = await uow.reconciliations.sweep_batch(
            SweepCursor(NOW, (NOW - timedelta(days=100, minutes=-7), "new_000007")),
            timedelta(days=120),
            3,
        )
    assert [p.id for p in batch] == ["new_000008", "new_000009", "new_000010"]


async def test_unreadable_since_its_first_unreadable_check_and_open_records_stay(
    database_url, sessions, round_trips
):
    t0 = NOW + timedelta(days=1)
    charge = (MismatchKind.CHARGE, "provider captured 2500, local state AUTHORIZED")
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        await uow.autocommit()
        await uow.reconciliations.record_checks({"u1": None, "u2": [charge], "u3": []}, t0)
        t1 = t0 + timedelta(minutes=1)
        await uow.reconciliations.record_checks({"u1": None, "u2": None}, t1)
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        last = await uow.reconciliations.last_checks(["u1", "u2", "u3"])
    assert last == {
        "u1": LastCheck(t1, (), t0),  # since the first check that could not read it
        "u2": LastCheck(t1, (charge,), t1),
        "u3": LastCheck(t0),
    }
    # A day on, the closed record is forgotten, the open ones stay.
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        await uow.autocommit()
        await uow.reconciliations.forget_before(t1 + timedelta(days=1), 1000)
    with round_trips:
        async with SqlPaymentsUnitOfWork(sessions) as uow:
            both = await uow.reconciliations.last_and_open_checks(["new_000001"], 50)
    assert {"u1", "u2"} <= set(both) and "u3" not in both
    (statement,) = [s for s in round_trips.statements if "payment_reconciliations" in s]
    async with planning(database_url) as connection:
        plan = await generic_plan(connection, statement)
    assert "ix_payment_reconciliations_open" in plan and "Seq Scan" not in plan, plan
    assert "payment_reconciliations_pkey" in plan, plan
    # Read again: no longer unreadable.
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        await uow.autocommit()
        await uow.reconciliations.record_checks({"u1": []}, t1 + timedelta(minutes=1))
        (check,) = (await uow.reconciliations.last_checks(["u1"])).values()
    assert check.unreadable_since is None and not check.open


async def test_migration_0018_goes_down_and_up(database_url: Any) -> None:
    config = alembic_config(SPECS["payments"].migrations, database_url)
    connection = await asyncpg.connect(libpq_url(database_url))
    exists = "SELECT to_regclass('payment_reconciliation_sweep') IS NOT NULL"
    try:
        await asyncio.to_thread(command.downgrade, config, "0017")
        try:
            assert not await connection.fetchval(exists)
        finally:
            await asyncio.to_thread(command.upgrade, config, "head")
        assert await connection.fetchval(exists)
    finally:
        await connection.close()
