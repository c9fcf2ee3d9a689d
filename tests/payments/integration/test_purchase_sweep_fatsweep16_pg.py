"""The reconciliation's pass through paid plan purchases of a provider that sends no refund event
(Fatora) on PostgreSQL (OPS-3, payments migration 0024): one row per provider that a round's
write never moves back (two rounds at once: the one further on wins; a later pass wins); a
service instance started anew on the same database continues the pass where the last one left
it; the pass's batch is read from its cursor through `ix_transactions_updated_at`; the migration
goes down and up cleanly."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

import asyncpg
from alembic import command

from hirepay_dev.pg import libpq_url
from hirepay_dev.services import SPECS
from hirepay_platform.migrations import alembic_config
from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain import commands
from payments.domain.credits import CreditGrant
from payments.domain.provider import ProviderPayment, ProviderRefund, ProviderStatus
from payments.domain.reconciliation import SweepCursor
from payments.domain.transactions import TxnStatus
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import audit, credits
from payments.service_layer.providers import ProviderRegistry
from tests.payments.unit.test_reconciled_refunds_fatrf14 import OneRefundProvider
from tests.support.payments_fakes import Clock, FakeLedger
from tests.support.payments_helpers import paid_plan_transaction
from tests.support.pg_plans import generic_plan, planning

NOW = Clock().now
PRICE = 4_900
PURCHASES = 7
PER_ROUND = 2


class _Fatora(OneRefundProvider):
    """Fatora as the fakes model it, noting which purchases' payments were read for refunds."""

    def __init__(self) -> None:
        super().__init__()
        self.read: list[str] = []

    async def list_refunds(self, intent_id: str) -> list[ProviderRefund]:
        self.read.append(intent_id)
        return await super().list_refunds(intent_id)


async def _cursors(sessions: Any) -> dict[str, SweepCursor]:
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        return await uow.reconciliations.purchase_sweeps(["fatora", "tap"])


async def _save(sessions: Any, provider: str, cursor: SweepCursor) -> bool:
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        moved = await uow.reconciliations.save_purchase_sweep(provider, cursor)
        await uow.commit()
    return moved


async def test_a_providers_pass_is_one_row_a_write_never_moves_back(sessions: Any) -> None:
    at = NOW - timedelta(days=3)
    here = SweepCursor(NOW, (at, "txn_2"))
    assert await _cursors(sessions) == {}
    assert await _save(sessions, "fatora", here)
    # A round at once that read the pass before and went less far, or as far: not moved back.
    assert not await _save(sessions, "fatora", SweepCursor(NOW, (at, "txn_1")))
    assert not await _save(sessions, "fatora", SweepCursor(NOW, (at - timedelta(days=1), "z")))
    assert not await _save(sessions, "fatora", SweepCursor(NOW))  # the pass's beginning
    assert not await _save(sessions, "fatora", here)
    # Nor back into the pass before, however far that round went.
    before = SweepCursor(NOW - timedelta(hours=1), (NOW - timedelta(minutes=61), "txn_9"))
    assert not await _save(sessions, "fatora", before)
    assert await _save(sessions, "tap", before)  # one row per provider
    assert await _cursors(sessions) == {"fatora": here, "tap": before}
    # Further on it moves, and a later pass (from its beginning) too.
    further = SweepCursor(NOW, (at, "txn_3"))
    assert await _save(sessions, "fatora", further)
    later = SweepCursor(NOW + timedelta(minutes=1))
    assert await _save(sessions, "fatora", later)
    assert await _cursors(sessions) == {"fatora": later, "tap": before}


async def _paid(deps: Deps, provider: _Fatora, index: int) -> str:
    """A paid Fatora purchase changed `index` minutes into the day before (the pass's order),
    its money and credits booked."""
    txn_id = f"txn_{index}"
    intent = f"ord_{txn_id}"
    txn = replace(
        paid_plan_transaction(txn_id),
        user_id=f"co-{index}",
        provider="fatora",
        payment_method="FATORA",
        provider_payment_intent_id=intent,
        updated_at=NOW - timedelta(days=1) + timedelta(minutes=index),
    )
    async with deps.uow as uow:
        await uow.transactions.add(txn)
        await uow.credit_grants.add(CreditGrant.issue(txn, deps.clock()))
        await uow.commit()
    provider.intents[intent] = ProviderPayment(
        intent, ProviderStatus.CAPTURED, PRICE, "USD", amount_received=PRICE
    )
    return intent


async def test_a_new_instance_on_the_same_database_continues_the_pass(
    database_url: str, sessions: Any, round_trips: Any
) -> None:
    """Rounds of a window of one and a batch of two: the first instance's round reads the
    newest and the pass's first two, then the instance is gone; a new one (its own provider
    client, nothing shared) reads the pass's next two, where a purchase refunded at Fatora's
    dashboard is found, booked and counted in the answer, the money and credits back once."""
    clock, ledger = Clock(), FakeLedger()
    policy = Policy(
        provider_timeout=1,
        grant_retry_base=1,
        grant_retry_max=4,
        reconcile_sweep_per_round=PER_ROUND,
        reconcile_reads_per_second=1000,
    )
    first = _Fatora()

    def instance(provider: _Fatora) -> Any:
        def new_deps() -> Deps:
            uow = SqlPaymentsUnitOfWork(sessions)
            return Deps(uow, ProviderRegistry([provider]), policy, clock, ledger=ledger)

        return new_deps

    deps = instance(first)
    intents = [await _paid(deps(), first, i) for i in range(PURCHASES)]
    await credits.settle_due_grants(deps())
    booked = {k: v for k, v in ledger.balances.items() if v}
    assert booked[("platform", "USD")] == PRICE * PURCHASES
    first.refund_at_dashboard(intents[3])  # the pass's second batch
    clock.advance(60)
    round_one = await audit.reconcile_provider(commands.ReconcileProvider(limit=1), deps)
    assert round_one.purchases == audit.PurchaseRound(checked=1 + PER_ROUND)
    assert sorted(first.read) == sorted(intents[i] for i in (6, 0, 1))

    # The process is gone; a new instance, its own provider client (the refund is Fatora's).
    second = _Fatora()
    second.intents, second.refunds, second.refunded = first.intents, first.refunds, first.refunded
    clock.advance(60)
    with round_trips:
        round_two = await audit.reconcile_provider(
            commands.ReconcileProvider(limit=1), instance(second)
        )
    assert sorted(second.read) == sorted(intents[i] for i in (6, 2, 3))
    found = audit.PurchaseRefundBooked("txn_3", "fatora", PRICE, "USD", in_full=True)
    assert round_two.purchases == audit.PurchaseRound(
        checked=1 + PER_ROUND, found=1, booked=[found]
    )
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        txn = await uow.transactions.get("txn_3")
    assert txn is not None and txn.status is TxnStatus.REFUNDED
    await credits.settle_due_grants(deps())
    moved = {k: v for k, v in ledger.balances.items() if v}
    assert moved[("platform", "USD")] == PRICE * (PURCHASES - 1)  # the money back, once
    assert ("co-3", "JOB_CREDIT") not in moved  # its unused credits revoked
    assert moved[("co-2", "JOB_CREDIT")] == 2_500
    # The pass's batch read: from the cursor within the pass, through the updated_at index.
    (batch,) = [
        s for s in round_trips.statements if "FROM transactions" in s and "updated_at <" in s
    ]
    async with planning(database_url) as connection:
        plan = await generic_plan(connection, batch)
    assert "ix_transactions_updated_at" in plan and "Seq Scan" not in plan, plan


async def test_migration_0024_goes_down_and_up(database_url: Any) -> None:
    config = alembic_config(SPECS["payments"].migrations, database_url)
    connection = await asyncpg.connect(libpq_url(database_url))
    exists = "SELECT to_regclass('purchase_reconciliation_sweeps') IS NOT NULL"
    try:
        await asyncio.to_thread(command.downgrade, config, "0023")
        try:
            assert not await connection.fetchval(exists)
        finally:
            await asyncio.to_thread(command.upgrade, config, "head")
        assert await connection.fetchval(exists)
    finally:
        await connection.close()
