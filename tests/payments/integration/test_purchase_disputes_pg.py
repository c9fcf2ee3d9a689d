"""Disputes of plan purchases on real PostgreSQL (ESC-1, CR-2, API-4): two events of one dispute
applied at once (and their twins) record one dispute, book its withdrawal once, and refund the
purchase once when it is lost in full — one revocation of the unused credits, one
`transaction.refunded` — wallet and credit balances asserted; the ledger auditor expects the
withdrawal (revenue taken back) and no second booking of the money by the full refund."""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain.credits import CANDIDATE_CREDIT, JOB_CREDIT
from payments.domain.disputes import DisputeMoney, DisputeStatus, ProviderDispute
from payments.domain.provider import EventSubject, ProviderEvent
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import credits
from payments.service_layer.handlers.disputes import DisputeEventOutcome, apply_dispute_event
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import DisputingProvider, FakeLedger
from tests.support.payments_helpers import paid_plan_transaction

_IDS = itertools.count(random.randrange(10**6, 10**9, 10**4))
PRICE = 4_900  # paid_plan_transaction's SWIFT_HIRE: 2,500 job credits, 50 candidate credits
FEE = 1_500


def _lost() -> float:
    labels = {"provider": "stripe", "outcome": "lost"}
    return REGISTRY.get_sample_value("hirepay_payment_disputes_closed_total", labels) or 0.0


async def test_two_events_of_a_purchase_dispute_at_once_book_and_refund_it_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    provider, wallet = DisputingProvider(), FakeLedger()

    def deps() -> Deps:  # one request's: its own unit of work
        return Deps(
            SqlPaymentsUnitOfWork(sessions),
            ProviderRegistry([provider]),
            Policy(provider_timeout=1, poll_base=1, poll_max=4),
            ledger=wallet,
        )

    n = next(_IDS)
    user = f"co-{n}"
    txn = replace(
        paid_plan_transaction(f"txn_dp_{n}"), provider_payment_intent_id=f"pi_{n}", user_id=user
    )
    async with deps().uow as uow:
        await uow.transactions.add(txn)
        await credits.record_settlement(uow, txn, deps())
        await uow.commit()
    await credits.settle_due_grants(deps())
    wallet.spend(user, JOB_CREDIT, 700)
    withdrawal = DisputeMoney(f"txn_w_{n}", -PRICE, FEE, "USD")
    dp = f"dp_{n}"
    # The dispute was opened and lost before either event arrived: both re-fetch it lost.
    provider.disputes[dp] = ProviderDispute(
        dp, f"pi_{n}", PRICE, "USD", DisputeStatus.LOST, "fraudulent", (withdrawal,)
    )
    lost_before = _lost()

    async def deliver(event_id: str, kind: str) -> DisputeEventOutcome:
        event = ProviderEvent(
            id=event_id,
            type=f"charge.dispute.{kind}",
            created=datetime.now(UTC),
            subject=EventSubject.DISPUTE,
            object_id=dp,
        )
        done = await apply_dispute_event(deps(), provider, event, {"id": event_id})
        assert done is not None
        return done

    outcomes = await asyncio.gather(
        *(deliver(f"evt_c_{dp}", "created") for _ in range(3)),
        *(deliver(f"evt_x_{dp}", "closed") for _ in range(3)),
    )
    assert sum(not o.duplicate for o in outcomes) == 2  # each event applied once
    assert sum(o.applied for o in outcomes) == 1  # the first of them did it all

    async def rows(sql: str) -> list[tuple[object, ...]]:
        async with sessions() as session:
            found = await session.execute(text(sql), {"t": txn.id, "d": dp})
            return [tuple(r) for r in found.all()]

    assert await rows(
        "SELECT status, withdrawn_minor, fee_minor FROM disputes WHERE payment_id = :t"
    ) == [("lost", PRICE, FEE)]
    assert await rows(
        "SELECT kind, count(*) FROM credit_grants WHERE transaction_id = :t GROUP BY kind"
        " ORDER BY kind"
    ) == [("dispute", 1), ("issue", 1), ("revoke", 1)]
    assert await rows(
        "SELECT status, metadata->>'disputed_minor' FROM transactions WHERE id = :t"
    ) == [("REFUNDED", str(PRICE))]
    assert await rows(
        "SELECT count(*) FROM outbox WHERE transaction_id = :t AND type = 'transaction.refunded'"
    ) == [(1,)]
    assert await rows("SELECT count(*) FROM provider_events WHERE object_id = :d AND applied") == [
        (2,)
    ]
    assert _lost() == lost_before + 1  # counted once, whichever event closed it

    await credits.settle_due_grants(deps())
    balance = wallet.balances.get
    # Revenue: the price in, the dispute's withdrawal out, nothing more (the full refund the
    # lost dispute makes books the credits only); the unused credits revoked, the spent kept.
    assert balance(("platform", "USD")) == 0
    assert (balance((user, JOB_CREDIT)), balance((user, CANDIDATE_CREDIT))) == (0, 0)
    assert wallet.transfers[f"payment:{txn.id}:refund:full"] == {
        JOB_CREDIT: 2_500 - 700,
        CANDIDATE_CREDIT: 50,
    }
    # The ledger auditor expects the capture and the withdrawal, and no money refunded again.
    async with deps().uow as uow:
        expected = await uow.credit_grants.expected(datetime.now(UTC) + timedelta(hours=1))
    mine = {
        e.transfer_id: (e.amount, e.refund, e.revenue) for e in expected if e.subject_id == txn.id
    }
    assert mine == {
        f"payment:{txn.id}:capture": (PRICE, False, PRICE),
        f"payment:{txn.id}:dispute:{withdrawal.id}": (PRICE, True, -PRICE),
    }
