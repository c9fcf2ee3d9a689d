"""The booking worker's round takes what one interval records under load in one pass (issue 13,
paywh15): the bookings of ~130 postings (one 0.5 s interval at c=32 is ~65; two intervals here)
are leased by one statement, sent in one CreateTransfers call, each with its own transfer id,
and marked done with their audits in one transaction. With rounds of 50 the same bookings took
three rounds: three leases, three wallet calls, three mark-done transactions."""

from __future__ import annotations

import itertools
import random

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork
from payments.domain.credits import CreditGrant, GrantStatus
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import credits
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import FakeLedger, FakeProvider
from tests.support.payments_helpers import owe_card_bookings

_IDS = itertools.count(random.randrange(10**6, 10**9, 10**4))
READY = 130


class CountingLedger(FakeLedger):
    """The fake ledger, remembering the bookings of each move_many call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []

    async def move_many(self, grants: list[CreditGrant]) -> list[object]:  # type: ignore[override]
        self.calls.append([g.transfer_id for g in grants])
        return await super().move_many(grants)


async def test_the_bookings_of_a_busy_interval_are_booked_in_one_round(
    sessions: async_sessionmaker[AsyncSession], round_trips
) -> None:
    # Whatever earlier tests of the module left due is booked first (not counted here).
    ledger = CountingLedger()
    while await credits.settle_due_grants(
        Deps(SqlPaymentsUnitOfWork(sessions), ProviderRegistry([FakeProvider()]), ledger=ledger)
    ):
        pass
    grants = await owe_card_bookings(sessions, "rs", _IDS, READY)
    ledger = CountingLedger()
    with round_trips:
        took = await credits.settle_due_grants(
            Deps(
                SqlPaymentsUnitOfWork(sessions), ProviderRegistry([FakeProvider()]), ledger=ledger
            ),
            limit=credits.GRANT_BATCH,
        )
    assert took == READY
    # One wallet call, each booking in it once under its own transfer id (its idempotency key).
    assert len(ledger.calls) == 1
    assert sorted(ledger.calls[0]) == sorted(g.transfer_id for g in grants)
    assert set(ledger.transfers) == {g.transfer_id for g in grants}
    # The lease, the mark-done and the audits: a few statements for the whole round.
    assert len(round_trips.statements) <= 4, round_trips.statements
    assert len(round_trips.transaction_control) <= 2, round_trips.transaction_control
    async with SqlPaymentsUnitOfWork(sessions) as uow:
        stored = [await uow.credit_grants.get(g.id) for g in grants]
    assert all(g is not None and g.status is GrantStatus.DONE for g in stored)
