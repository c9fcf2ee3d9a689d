"""A purchase refunded in full is counted in the subscriptions metric once its transaction
commits, never for a transaction rolled back (OPS-1: a metric counts what happened)."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import REGISTRY

from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers.credits import mark_refunded
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import Clock, FakeProvider, FakeUnitOfWork
from tests.support.payments_helpers import paid_plan_transaction

LABELS = {"user_type": "COMPANY", "status": "REFUNDED"}


def _refunded_count() -> float:
    return REGISTRY.get_sample_value("hirepay_subscription_transactions_total", LABELS) or 0.0


async def test_a_full_refund_is_counted_after_its_commit_and_not_when_rolled_back() -> None:
    deps = Deps(FakeUnitOfWork(), ProviderRegistry([FakeProvider()]), Policy(), clock=Clock())
    txn = paid_plan_transaction("txn_metric")
    async with deps.uow as uow:
        await uow.transactions.add(txn)
        await uow.commit()
    now = datetime(2026, 1, 10, tzinfo=UTC)
    before = _refunded_count()
    async with deps.uow as uow:  # left without a commit: rolled back
        stored = await uow.transactions.get(txn.id)
        assert stored is not None
        await mark_refunded(uow, deps, stored, actor="admin", reason="r", key="k-1", now=now)
    assert _refunded_count() == before
    async with deps.uow as uow:
        stored = await uow.transactions.get(txn.id)
        assert stored is not None
        await mark_refunded(uow, deps, stored, actor="admin", reason="r", key="k-2", now=now)
        assert _refunded_count() == before  # not before the commit either
        await uow.commit()
    assert _refunded_count() == before + 1
