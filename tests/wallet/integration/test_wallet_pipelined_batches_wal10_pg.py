"""Two grouped batches in flight at once on real PostgreSQL (issue 13): closed-loop callers (as the
bench's: each sends its next call when its last one was answered) on shared accounts, single
Transfer calls (half of them paying a fee into the sharded revenue account) and Reserve + Confirm
pairs, through batchers that run up to two batches at a time - and really do, which the test
checks. Every call is answered after its batch's COMMIT with its own outcome, no race is lost for
good (the batches lock account rows in id order, so two in flight wait for each other instead of
deadlocking), nothing is applied twice (twins of a transfer and of a Confirm sent at once are
answered once posted and once replayed), and the balances are exactly what the calls moved."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import text

from hirepay_platform.tcc import TccBranch
from tests.wallet.integration.conftest import posted_or_replayed
from wallet.domain import commands as c
from wallet.domain.ledger import Leg
from wallet.domain.model import AccountKind
from wallet.service_layer.batcher import HoldBatchers, TransferBatcher
from wallet.service_layer.deps import Deps

pytestmark = pytest.mark.usefixtures("sound")

FUNDS = 1_000_000
AMOUNT = 100
FEE = 10
WORKERS = 16
ROUNDS = 12


class OverlapProbe:
    """A unit-of-work factory that counts how many units of work (transactions of batches) are
    open at once."""

    def __init__(self, make) -> None:
        self._make = make
        self.open = 0
        self.most_open = 0

    def __call__(self):
        probe = self

        @asynccontextmanager
        async def counted():
            async with probe._make() as uow:
                probe.open += 1
                probe.most_open = max(probe.most_open, probe.open)
                try:
                    yield uow
                finally:
                    probe.open -= 1

        return counted()


async def test_two_batches_in_flight_race_on_shared_accounts_and_apply_everything_once(
    ledger, uow, clock, sessions
):
    payers = [await ledger.open(f"payer{i}") for i in range(4)]
    payees = [await ledger.open(f"payee{i}") for i in range(4)]
    revenue = await ledger.open("revenue", AccountKind.PLATFORM_REVENUE)
    for payer in payers:
        await ledger.fund(payer, FUNDS)
    # Each batcher's transactions counted apart (each may run two batches at once).
    probes = {name: OverlapProbe(uow) for name in ("transfer", "reserve", "confirm")}
    options = {"max_items": 8, "window_seconds": 0.001, "max_in_flight": 2}
    transfers = TransferBatcher(Deps(uow=probes["transfer"], clock=clock), **options)
    reserve = HoldBatchers(Deps(uow=probes["reserve"], clock=clock), **options).reserve
    confirm = HoldBatchers(Deps(uow=probes["confirm"], clock=clock), **options).confirm
    moved: Counter[str] = Counter()
    seen: Counter[str] = Counter()

    async def worker(w: int) -> None:
        payer, payee = payers[w % 4], payees[(w + 1) % 4]  # accounts shared by four workers
        for i in range(ROUNDS):
            legs = [Leg(payer, payee, AMOUNT, "USD")]
            if i % 2:
                legs.append(Leg(payer, revenue, FEE, "USD"))
            cmd = c.Transfer(f"pl-{ledger.tag}-{w}-{i}", tuple(legs))
            twins = 2 if i % 5 == 0 else 1  # a retry racing its first attempt
            outcomes = await asyncio.gather(
                *(posted_or_replayed(transfers.transfer(cmd)) for _ in range(twins))
            )
            seen.update(outcomes)
            assert sorted(outcomes) == ["posted", *["replayed"] * (twins - 1)], outcomes
            moved[payer] -= sum(g.amount for g in legs)
            moved[payee] += AMOUNT
            moved[revenue] += FEE * (len(legs) - 1)
            branch = TccBranch(f"pl-{ledger.tag}-{w}-{i}-{uuid.uuid4().hex[:6]}", "payment")
            reserved = await posted_or_replayed(
                reserve.call(c.ReserveHold(branch, payer, payee, AMOUNT, "USD"))
            )
            assert reserved == "posted", reserved
            twins = 2 if i % 3 == 0 else 1
            outcomes = await asyncio.gather(
                *(posted_or_replayed(confirm.call(c.ConfirmHold(branch))) for _ in range(twins))
            )
            seen.update(outcomes)
            assert sorted(outcomes) == ["posted", *["replayed"] * (twins - 1)], outcomes
            moved[payer] -= AMOUNT
            moved[payee] += AMOUNT

    await asyncio.gather(*(worker(w) for w in range(WORKERS)))
    # Batches did run beside each other, never more than allowed.
    assert probes["transfer"].most_open == 2
    assert max(probes["reserve"].most_open, probes["confirm"].most_open) == 2
    assert set(seen) == {"posted", "replayed"}
    for payer in payers:
        assert await ledger.balances(payer) == [(FUNDS + moved[payer], 0)]
    for account in [*payees, revenue]:
        assert await ledger.balances(account) == [(moved[account], 0)]
    async with sessions() as session:
        count = await session.execute(
            text("SELECT count(*) FROM transfers WHERE id LIKE :prefix"),
            {"prefix": f"pl-{ledger.tag}-%"},
        )
        assert count.scalar() == WORKERS * ROUNDS  # each transfer once (holds' are 'hold/...')
