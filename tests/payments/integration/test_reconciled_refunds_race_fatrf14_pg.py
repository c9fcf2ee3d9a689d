"""A refund made at Fatora's dashboard (no refund event) booked by the reconciliation, racing the
admin's own refund of the same payment and another reconciliation round, on PostgreSQL (ESC-1,
API-4, OPS-3): whichever takes the payment's row lock first, the payment is refunded once — one
succeeded refund record, one ledger booking owed, one `payment.refunded` settlement event.

The fake provider answers after a jittered pause, so the rounds interleave differently: the
reconciliation books first (the admin's refund is then refused, nothing left to refund), or the
admin's refund reserves first (the reconciliation leaves the payment: its own refund in flight
may be the one listed, Fatora's refunds carry no id of ours; the refund's answer, Fatora saying
it is refunded, records it as Hirepay's)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain import commands, errors
from payments.domain.model import PaymentState
from payments.domain.provider import ProviderPayment, ProviderRefund
from payments.domain.refunds import RefundStatus
from payments.service_layer import handlers
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import audit
from payments.service_layer.providers import ProviderRegistry
from tests.payments.unit.test_reconciled_refunds_fatrf14 import OneRefundProvider
from tests.support.payments_fakes import Clock
from tests.support.payments_helpers import authorize_command

ROUNDS = 12
AMOUNT = 2500  # authorize_command's


class JitteryProvider(OneRefundProvider):
    """Fatora-like, each read and refund answered after 0-15 ms (seeded: reproducible)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.random = random.Random(seed)
        self.on_list: Callable[[], object] | None = None

    async def _pause(self) -> None:
        await asyncio.sleep(self.random.uniform(0, 0.015))

    async def retrieve_payment(self, intent_id: str) -> ProviderPayment:
        await self._pause()
        return await super().retrieve_payment(intent_id)

    async def list_refunds(self, intent_id: str) -> list[ProviderRefund]:
        if self.on_list is not None:  # the race's other side begins amid the round's check
            begin, self.on_list = self.on_list, None
            begin()
        await self._pause()
        return await super().list_refunds(intent_id)

    async def refund(self, intent_id: str, *args, **kwargs) -> ProviderRefund:  # type: ignore[no-untyped-def]
        await self._pause()
        return await super().refund(intent_id, *args, **kwargs)


async def _counts(sessions: async_sessionmaker[AsyncSession], payment_id: str) -> tuple[int, int]:
    """(refund bookings owed, `payment.refunded` settlement events) of the payment."""
    async with sessions() as session:
        booked = await session.scalar(
            text("SELECT count(*) FROM credit_grants WHERE kind = 'refund' AND payment_id = :p"),
            {"p": payment_id},
        )
        published = await session.scalar(
            text("SELECT count(*) FROM outbox WHERE type = 'payment.refunded' AND payment_id = :p"),
            {"p": payment_id},
        )
    return int(booked or 0), int(published or 0)


async def test_a_reconciliation_and_the_admins_refund_racing_book_once(sessions) -> None:
    clock = Clock()
    outcomes: dict[str, int] = {}
    provider = JitteryProvider(seed=0)

    def deps() -> Deps:
        return Deps(
            SqlPaymentsUnitOfWork(sessions),
            ProviderRegistry([provider]),
            Policy(provider_timeout=1),
            clock=clock,
        )

    for n in range(ROUNDS):
        provider.random.seed(n)
        gtx = f"gtx-race-{n}"
        payment = (await handlers.authorize(authorize_command(gtx), deps())).payment
        await handlers.capture(commands.Capture(f"cap-{gtx}", payment.branch), deps())
        dashboard = n % 3 != 2  # two rounds in three: refunded at Fatora's dashboard first
        if dashboard:
            provider.refund_at_dashboard(payment.provider_payment_id)
        clock.advance(60)

        async def reconcile() -> audit.Reconciliation:
            return await audit.reconcile_provider(commands.ReconcileProvider(), deps)

        async def admin(pid: str = payment.id) -> str:
            # Begun at a random point of the round's refund check: before the provider's list
            # is answered, amid the re-read of our records, or once it holds the row lock.
            await asyncio.sleep(provider.random.uniform(0, 0.03))
            try:
                await handlers.refund(
                    commands.Refund(f"admin-{pid}", pid, 0), deps(), actor="admin"
                )
            except errors.RefundExceedsCaptured:
                return "refused"
            return "refunded"

        started: list[asyncio.Task[str]] = []
        provider.on_list = lambda started=started: started.append(asyncio.create_task(admin()))
        await asyncio.gather(reconcile(), reconcile())
        [admins] = started
        refunded_by_admin = await admins
        # Then a round with nothing racing: whatever a racing round left is booked now.
        await reconcile()
        async with SqlPaymentsUnitOfWork(sessions) as uow:
            p = await uow.payments.get(payment.id)
            refunds = await uow.refunds.list_for_payment(payment.id)
        assert p is not None
        succeeded = [r for r in refunds if r.status is RefundStatus.SUCCEEDED]
        refund_id = f"{payment.provider_payment_id}:refund"
        assert [(r.provider_refund_id, r.amount_minor) for r in succeeded] == [
            (refund_id, AMOUNT)
        ], (n, refunds)
        assert (p.state, p.refunded_minor) == (PaymentState.REFUNDED, AMOUNT), n
        assert await _counts(sessions, payment.id) == (1, 1), n
        assert provider.refunded[payment.provider_payment_id] == AMOUNT  # one refund at Fatora
        by = "reconciliation" if succeeded[0].made_at_provider else "admin"
        key = f"{'dashboard' if dashboard else 'none'}:{by}:{refunded_by_admin}"
        outcomes[key] = outcomes.get(key, 0) + 1
    # A dashboard refund is Hirepay's record either way: the reconciliation's, or (the admin
    # first) the admin's refund, answered by Fatora as refunded already.
    assert set(outcomes) <= {
        "dashboard:reconciliation:refused",
        "dashboard:admin:refunded",
        "none:admin:refunded",
    }, outcomes
