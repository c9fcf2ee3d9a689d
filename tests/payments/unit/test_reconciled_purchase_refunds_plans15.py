"""Plan purchases refunded at a provider that sends no refund event (Fatora: a refund from its
dashboard), found by the provider reconciliation (OPS-3) and booked through the webhook's own
core (provider_refunds.book_purchase_refunds; CR-2, ESC-1 every cent, API-4, PAY-15), against the
in-memory fakes: refunded in full, REFUNDED with its unused credits revoked, once whatever the
rounds; refunded in part, that money booked once and the credits kept; a provider whose refunds
arrive by event is not read for them; the pass reaches every paid purchase; a provider unreadable
now is read again; the admin's refund and a round book once in either order."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from payments.domain import commands
from payments.domain.credits import CreditGrant
from payments.domain.provider import OutcomeUnknown, ProviderPayment, ProviderStatus
from payments.domain.transactions import TxnStatus
from payments.service_layer import metrics
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import audit, credits
from payments.service_layer.providers import ProviderRegistry
from tests.payments.unit.test_reconciled_refunds_fatrf14 import OneRefundProvider
from tests.support.payments_fakes import Clock, FakeLedger, FakeProvider, FakeUnitOfWork
from tests.support.payments_helpers import paid_plan_transaction

OWNER = "co-1"
PRICE = 4_900


class SilentProvider(FakeProvider):
    """A provider that sends no refund event but refunds in part (the core's other branch)."""

    name = "fatora"
    refunds_by_event = False


def _deps(provider: FakeProvider, **policy: float) -> Deps:
    return Deps(
        FakeUnitOfWork(),
        ProviderRegistry([provider]),
        Policy(grant_retry_base=1, grant_retry_max=4, provider_timeout=1, **policy),
        clock=Clock(),
        ledger=FakeLedger(),
    )


@pytest.fixture
def deps() -> Deps:
    return _deps(OneRefundProvider())


def _provider(deps: Deps) -> FakeProvider:
    [name] = deps.providers.names
    provider = deps.providers.of_existing(name)
    assert isinstance(provider, FakeProvider)
    return provider


def _moved(deps: Deps) -> dict[tuple[str, str], int]:
    assert isinstance(deps.ledger, FakeLedger)
    return {k: v for k, v in deps.ledger.balances.items() if v}


async def _paid_purchase(deps: Deps, txn_id: str = "txn_1", age_seconds: float = 0) -> str:
    """A paid plan purchase through the deps' provider, its money and credits booked; its
    provider payment id."""
    provider = _provider(deps)
    intent = f"ord_{txn_id}"
    txn = replace(
        paid_plan_transaction(txn_id),
        provider=provider.name,
        payment_method=provider.name.upper(),
        provider_payment_intent_id=intent,
        updated_at=deps.clock() - timedelta(seconds=age_seconds),
    )
    async with deps.uow as uow:
        await uow.transactions.add(txn)
        await uow.credit_grants.add(CreditGrant.issue(txn, deps.clock()))
        await uow.commit()
    await credits.settle_due_grants(deps)
    provider.intents[intent] = ProviderPayment(
        intent, ProviderStatus.CAPTURED, PRICE, "USD", amount_received=PRICE
    )
    return intent


async def _round(deps: Deps, limit: int = 100) -> audit.Reconciliation:
    assert isinstance(deps.clock, Clock)
    deps.clock.advance(60)
    return await audit.reconcile_provider(commands.ReconcileProvider(limit), lambda: deps)


async def _status(deps: Deps, txn_id: str = "txn_1") -> TxnStatus:
    async with deps.uow as uow:
        txn = await uow.transactions.get(txn_id)
    assert txn is not None
    return txn.status


async def _trail(deps: Deps, txn_id: str = "txn_1") -> list[tuple[str, str, str]]:
    async with deps.uow as uow:
        entries = await uow.audit.list_for_transaction(txn_id)
    return [(e.action, e.actor, e.reason) for e in entries]


async def _past(deps: Deps) -> tuple[datetime, str] | None:
    """What Fatora's pass through paid purchases has gone past (None: none yet)."""
    async with deps.uow as uow:
        cursor = (await uow.reconciliations.purchase_sweeps(["fatora"])).get("fatora")
    return None if cursor is None else cursor.after


def _count(result: str) -> float:
    return metrics.PROVIDER_REFUNDS.labels("fatora", result)._value.get()


async def test_a_purchase_refunded_at_fatoras_dashboard_is_found_revoked_and_booked_once(
    deps: Deps,
) -> None:
    intent = await _paid_purchase(deps)
    assert _moved(deps)[(OWNER, "JOB_CREDIT")] == 2_500
    provider = _provider(deps)
    assert isinstance(provider, OneRefundProvider)
    provider.refund_at_dashboard(intent)
    before = _count("purchase_reconciled")
    await _round(deps)
    assert await _status(deps) is TxnStatus.REFUNDED
    await credits.settle_due_grants(deps)
    assert _moved(deps) == {}  # the money back out of revenue, the unused credits revoked
    trail = await _trail(deps)
    assert any(
        a == ("refund", "reconciliation") and "found by the reconciliation" in r
        for a, _, r in [((x, y), y, z) for x, y, z in trail]
    )
    assert _count("purchase_reconciled") == before + 1
    # Another round (and another) finds it REFUNDED: nothing read into a booking, nothing written.
    await _round(deps)
    await _round(deps)
    assert await _trail(deps) == trail
    assert _count("purchase_reconciled") == before + 1
    async with deps.uow as uow:
        grants = [g.id for g in await uow.credit_grants.for_transaction("txn_1")]
    assert sorted(grants) == sorted(["issue:txn_1", "revoke:txn_1"]), grants


async def test_a_purchase_refunded_in_part_keeps_its_credits_and_the_rest_refunds_it() -> None:
    deps = _deps(SilentProvider())
    intent = await _paid_purchase(deps)
    provider = _provider(deps)
    re_id = provider.refund_outside(intent, 1_000)
    await _round(deps)
    await _round(deps)  # booked once
    async with deps.uow as uow:
        txn = await uow.transactions.get("txn_1")
        grants = {g.id for g in await uow.credit_grants.for_transaction("txn_1")}
    assert txn is not None and txn.status is TxnStatus.SUCCESS
    assert txn.metadata["refunded_minor"] == "1000"
    assert f"purchase_refund:{re_id}" in grants
    await credits.settle_due_grants(deps)
    assert _moved(deps)[("platform", "USD")] == PRICE - 1_000
    assert _moved(deps)[(OWNER, "JOB_CREDIT")] == 2_500  # kept
    provider.refund_outside(intent, PRICE - 1_000)  # the rest
    await _round(deps)
    assert await _status(deps) is TxnStatus.REFUNDED
    await credits.settle_due_grants(deps)
    assert _moved(deps) == {}  # every cent once: 1,000 + 3,900; the unused credits revoked


async def test_a_provider_with_refund_events_is_not_read_for_its_purchases() -> None:
    deps = _deps(FakeProvider())  # Stripe-like: its refunds arrive by event
    intent = await _paid_purchase(deps)
    provider = _provider(deps)
    provider.refund_outside(intent, PRICE)
    await _round(deps)
    assert provider.calls == []
    assert await _status(deps) is TxnStatus.SUCCESS  # its event books it (provider_refunds.py)


async def test_the_pass_reaches_every_paid_purchase_a_batch_a_round() -> None:
    """Five paid purchases, a round's window of one (the newest) and a batch of two: one in the
    pass's second batch, refunded at the dashboard, is found at the second round, not the first;
    the third round ends the pass and the next begins again from the oldest."""
    deps = _deps(OneRefundProvider(), reconcile_sweep_per_round=2)
    intents = [await _paid_purchase(deps, f"txn_{i}", age_seconds=1000 - i) for i in range(5)]
    provider = _provider(deps)
    assert isinstance(provider, OneRefundProvider)
    provider.refund_at_dashboard(intents[2])  # neither the window nor the pass's first batch
    await _round(deps, limit=1)
    assert await _status(deps, "txn_2") is TxnStatus.SUCCESS
    await _round(deps, limit=1)
    assert await _status(deps, "txn_2") is TxnStatus.REFUNDED
    await _round(deps, limit=1)
    assert await _past(deps) is None  # the pass is done: the next begins from the oldest
    provider.refund_at_dashboard(intents[0])
    await _round(deps, limit=1)
    assert await _status(deps, "txn_0") is TxnStatus.REFUNDED
    statuses = [await _status(deps, f"txn_{i}") for i in (1, 3, 4)]
    assert statuses == [TxnStatus.SUCCESS] * 3


async def test_a_provider_unreadable_now_books_nothing_and_a_later_round_does(deps: Deps) -> None:
    intent = await _paid_purchase(deps)
    provider = _provider(deps)
    assert isinstance(provider, OneRefundProvider)
    provider.refund_at_dashboard(intent)
    provider.script = [OutcomeUnknown("provider unreachable", timeout=False)]
    await _round(deps)
    assert await _status(deps) is TxnStatus.SUCCESS
    await _round(deps)
    assert await _status(deps) is TxnStatus.REFUNDED


@pytest.mark.parametrize("round_first", [True, False], ids=["round-first", "admin-first"])
async def test_the_admins_refund_and_a_round_book_the_purchase_once(
    deps: Deps, round_first: bool
) -> None:
    """Fatora's refunds carry nothing of Hirepay's: a round that reads the admin's refund before
    its request records it marks the purchase REFUNDED, and the request then finds it so (and the
    other way round); one revocation either way, the money once."""
    intent = await _paid_purchase(deps)
    provider = _provider(deps)
    assert isinstance(provider, OneRefundProvider)
    if round_first:
        provider.refund_at_dashboard(intent)  # as the admin's refund made and not recorded yet
        await _round(deps)
    refunded = await credits.refund_transaction(
        commands.RefundTransaction("rt-1", "txn_1", reason="customer asked"), deps
    )
    assert refunded.transaction.status is TxnStatus.REFUNDED
    await _round(deps)
    await credits.settle_due_grants(deps)
    assert _moved(deps) == {}
    trail = await _trail(deps)
    refunds = [t for t in trail if t[0] == "refund"]
    assert len(refunds) == 1, trail
    assert refunds[0][1] == ("reconciliation" if round_first else "admin")


async def test_the_pass_waits_for_a_purchase_its_provider_could_not_read() -> None:
    """The pass never moves past a purchase whose provider could not be read now: the next round
    reads it first (its refund is found then), rather than a whole pass later."""
    deps = _deps(OneRefundProvider(), reconcile_sweep_per_round=2, reconcile_concurrency=1)
    intents = [await _paid_purchase(deps, f"txn_{i}", age_seconds=1000 - i) for i in range(4)]
    provider = _provider(deps)
    assert isinstance(provider, OneRefundProvider)
    provider.refund_at_dashboard(intents[0])
    # The window's newest is read first, then the batch's oldest: unreadable now.
    provider.script = [None, OutcomeUnknown("provider unreachable", timeout=False)]
    await _round(deps, limit=1)
    assert await _status(deps, "txn_0") is TxnStatus.SUCCESS
    assert await _past(deps) is None  # not past it
    await _round(deps, limit=1)
    assert await _status(deps, "txn_0") is TxnStatus.REFUNDED
