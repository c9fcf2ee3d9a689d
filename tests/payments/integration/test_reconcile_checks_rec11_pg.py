"""The provider reconciliation's record of its checks on PostgreSQL (OPS-3, payments migration
0017, `payment_reconciliations`): rounds cut short by their caller's deadline reach every payment
of the window, on the real repositories, and answer what the last check found of those they left;
the record (time and findings) is one statement a round, read by primary key, and leaves the
payments' rows (and so the window's order) alone; the migration goes down and up cleanly."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from alembic import command

from hirepay_dev.pg import libpq_url
from hirepay_dev.services import SPECS
from hirepay_platform.migrations import alembic_config
from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain import commands
from payments.domain.provider import OutcomeUnknown
from payments.domain.reconciliation import LastCheck, MismatchKind
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import audit
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import Clock, FakeProvider
from tests.support.pg_plans import generic_plan, planning

PAYMENTS = 30
CHECKED_BEFORE = 20_000  # rows of earlier rounds the read by primary key must not walk
LONG_AGO = datetime(2025, 1, 1, tzinfo=UTC)  # when (before the rounds' clock, tests' Clock)


async def fill_database(connection: asyncpg.Connection) -> None:
    """30 authorized payments, pay_00000030 the most recently changed, each with a provider id
    the fake provider does not know (so every payment a round checks names itself); and the
    records of 20,000 other payments checked long ago (a year before the rounds' clock)."""
    await connection.execute(
        """
        INSERT INTO payments (id, global_tx_id, branch_id, owner_id, amount_minor, currency,
                              method, provider, state, provider_payment_id, metadata,
                              created_at, updated_at)
        SELECT 'pay_' || lpad(n::text, 8, '0'), 'gtx_' || n, 'payment', 'company-1', 2500,
               'USD', 'CARD', 'stripe', 'AUTHORIZED', 'pi_' || n, '{}',
               now() - interval '1 day' + n * interval '1 second',
               now() - interval '1 day' + n * interval '1 second'
        FROM generate_series(1, $1) AS n
        """,
        PAYMENTS,
    )
    await connection.execute(
        """
        INSERT INTO payment_reconciliations (payment_id, checked_at)
        SELECT 'old_' || lpad(n::text, 8, '0'), $2::timestamptz + n * interval '1 second'
        FROM generate_series(1, $1) AS n
        """,
        CHECKED_BEFORE,
        LONG_AGO,
    )
    await connection.execute("ANALYZE payment_reconciliations")


def _starts_allowed(n: int) -> Callable[[], float]:
    """A caller's `time_left` whose deadline allows exactly `n` checks one at a time: ample for
    the round's start and its first `n` checks, then gone (no clock: the same on a loaded box)."""
    calls = itertools.count()
    return lambda: 10.0 if next(calls) <= n else 0.0


async def _updated_at(url: str) -> list[tuple[str, datetime]]:
    connection = await asyncpg.connect(libpq_url(url))
    try:
        rows = await connection.fetch("SELECT id, updated_at FROM payments ORDER BY id")
        return [(r["id"], r["updated_at"]) for r in rows]
    finally:
        await connection.close()


async def test_rounds_cut_short_reach_every_payment_and_leave_the_payments_alone(
    database_url, sessions, round_trips
):
    clock, provider = Clock(), FakeProvider()
    policy = Policy(provider_timeout=1, reconcile_concurrency=1)

    def new_deps() -> Deps:
        return Deps(SqlPaymentsUnitOfWork(sessions), ProviderRegistry([provider]), policy, clock)

    before = await _updated_at(database_url)
    rounds: list[list[str]] = []
    for _ in range(4):  # 30 payments, 8 a round: 4 rounds
        clock.advance(60)
        with round_trips:
            result = await audit.reconcile_provider(
                commands.ReconcileProvider(limit=100), new_deps, _starts_allowed(8)
            )
        assert (result.checked, result.left) == (8, PAYMENTS - 8)
        rounds.append([m.payment_id for m in result.mismatches])
        # The round's record: one statement for its 8 checks, and one forgetting records of
        # payments that left the window long ago.
        recorded = [s for s in round_trips.statements if "payment_reconciliations" in s]
        assert [s.split()[0] for s in recorded] == ["SELECT", "INSERT", "DELETE"], recorded
    newest_first = [f"pay_{n:08d}" for n in range(PAYMENTS, 0, -1)]
    assert rounds[0] == newest_first[:8]  # never checked: the newest first
    assert [p for r in rounds[:3] for p in r] == newest_first[:24]
    assert rounds[3] == sorted(newest_first[24:] + newest_first[:2], reverse=True)
    assert await _updated_at(database_url) == before  # the payments' rows untouched

    async with SqlPaymentsUnitOfWork(sessions) as uow:
        last = await uow.reconciliations.last_checks(newest_first)
    assert last[newest_first[0]].at == clock.now  # checked again, now
    assert last[newest_first[2]].at == clock.now - timedelta(seconds=180)  # the first round's
    assert last[newest_first[2]].found == (
        (MismatchKind.CHARGE, "provider: No such payment_intent: 'pi_28'"),
    )
    # A round's answer: what it found, and what the last check found of those it left.
    assert [m.payment_id for m in result.earlier] == newest_first[2:24]


async def test_a_record_is_replaced_by_a_later_check_and_read_by_primary_key(
    database_url, sessions, round_trips
):
    at = datetime(2026, 1, 1, tzinfo=UTC)
    charge = (MismatchKind.CHARGE, "provider captured 2500, local state AUTHORIZED")
    refund = (MismatchKind.REFUND, "refund re_1 succeeded locally, unknown to the provider")
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        await uow.reconciliations.record_checks(
            {"pay_x1": [charge, refund], "pay_x2": [], "pay_x3": [charge], "pay_x4": None}, at
        )
        await uow.commit()
    later = at + timedelta(minutes=1)
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        # pay_x2 found a mismatch now; pay_x3's provider could not be read: its finding stays.
        await uow.reconciliations.record_checks({"pay_x2": [charge], "pay_x3": None}, later)
        await uow.commit()
    with round_trips:
        async with SqlPaymentsUnitOfWork(sessions) as uow:
            last = await uow.reconciliations.last_checks(
                ["pay_x1", "pay_x2", "pay_x3", "pay_x4", "pay_never"]
            )
    assert last == {
        "pay_x1": LastCheck(at, (charge, refund)),
        "pay_x2": LastCheck(later, (charge,)),
        # Unreadable since the check that first could not read it (payments 0018).
        "pay_x3": LastCheck(later, (charge,), later),
        "pay_x4": LastCheck(at, (), at),
    }
    (read,) = [s for s in round_trips.statements if "payment_reconciliations" in s]
    async with planning(database_url) as connection:
        plan = await generic_plan(connection, read)
    assert "payment_reconciliations_pkey" in plan and "Seq Scan" not in plan, plan


async def test_records_not_renewed_for_a_day_are_forgotten_a_bounded_batch_at_a_time(
    database_url, sessions, round_trips
):
    before = LONG_AGO + timedelta(days=180)
    oldest = (
        "SELECT payment_id FROM payment_reconciliations WHERE checked_at < $1"
        " ORDER BY checked_at LIMIT 1000"
    )
    async with planning(database_url) as connection:
        total = await connection.fetchval("SELECT count(*) FROM payment_reconciliations")
        going = {r[0] for r in await connection.fetch(oldest, before)}
    assert len(going) == 1000
    with round_trips:
        async with SqlPaymentsUnitOfWork(sessions) as uow:
            await uow.autocommit()
            forgotten = await uow.reconciliations.forget_before(before, 1000)
    assert forgotten == 1000
    (statement,) = [s for s in round_trips.statements if "payment_reconciliations" in s]
    async with planning(database_url) as connection:
        assert await connection.fetchval("SELECT count(*) FROM payment_reconciliations") == (
            total - 1000
        )
        left = await connection.fetchval(
            "SELECT count(*) FROM payment_reconciliations WHERE payment_id = ANY($1)", list(going)
        )
        assert left == 0  # the oldest went
        plan = await generic_plan(connection, statement)
    assert "ix_payment_reconciliations_checked_at" in plan and "Seq Scan" not in plan, plan


class _UnreadableFor(FakeProvider):
    """A provider that cannot be read about one payment now (a timeout)."""

    def __init__(self, intent_id: str) -> None:
        super().__init__()
        self.unreadable = intent_id

    async def retrieve_payment(self, intent_id: str) -> Any:
        if intent_id == self.unreadable:
            raise OutcomeUnknown("slow", timeout=True)
        return await super().retrieve_payment(intent_id)


async def test_a_rounds_record_holds_no_rows_while_it_waits_for_others(database_url, sessions):
    """Two rounds at once (the auditor's and a report on demand) may record the same payments,
    one as read and one as unreadable: each statement commits by itself, so a round waiting for
    a row another holds holds none of its own (no deadlock between the two)."""
    clock = Clock()
    clock.advance(3600)
    policy = Policy(provider_timeout=1, reconcile_concurrency=1)
    provider = _UnreadableFor("pi_30")  # pay_00000030 unreadable, pay_00000029 read

    def new_deps() -> Deps:
        return Deps(SqlPaymentsUnitOfWork(sessions), ProviderRegistry([provider]), policy, clock)

    holder = await asyncpg.connect(libpq_url(database_url))
    other = await asyncpg.connect(libpq_url(database_url))
    try:
        async with holder.transaction():  # another round holds pay_00000030's record
            await holder.execute(
                "SELECT 1 FROM payment_reconciliations WHERE payment_id = 'pay_00000030' FOR UPDATE"
            )
            round_ = asyncio.create_task(
                audit.reconcile_provider(commands.ReconcileProvider(limit=2), new_deps)
            )
            for _ in range(100):  # until the round waits for that row
                await asyncio.sleep(0.05)
                waiting = await other.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE 'INSERT INTO payment_reconciliations%'"
                )
                if waiting:
                    break
            assert waiting and not round_.done()
            # Its other record is committed already and not locked.
            async with other.transaction():
                checked_at = await other.fetchval(
                    "SELECT checked_at FROM payment_reconciliations"
                    " WHERE payment_id = 'pay_00000029' FOR UPDATE NOWAIT"
                )
            assert checked_at == clock.now
        result = await asyncio.wait_for(round_, 10)
    finally:
        await holder.close()
        await other.close()
    # The window's pay_00000029 read, pay_00000030 not; the others checked are the earlier
    # tests' open records (their findings), checked again every round (payments 0018).
    async with planning(database_url) as connection:
        reopened = await connection.fetchval(
            "SELECT count(*) FROM payment_reconciliations WHERE mismatches <> '[]'"
            " AND payment_id LIKE 'pay_000%' AND payment_id NOT IN ('pay_00000029', 'pay_00000030')"
        )
    assert (result.checked, result.left, result.unreadable) == (1 + reopened, 0, 1)


async def test_migration_0017_goes_down_and_up(database_url):
    config = alembic_config(SPECS["payments"].migrations, database_url)
    connection = await asyncpg.connect(libpq_url(database_url))
    exists = "SELECT to_regclass('payment_reconciliations') IS NOT NULL"
    try:
        await asyncio.to_thread(command.downgrade, config, "0016")
        try:
            assert not await connection.fetchval(exists)
        finally:
            await asyncio.to_thread(command.upgrade, config, "head")
        assert await connection.fetchval(exists)
        assert await connection.fetchval("SELECT count(*) FROM payment_reconciliations") == 0
    finally:
        await connection.close()
