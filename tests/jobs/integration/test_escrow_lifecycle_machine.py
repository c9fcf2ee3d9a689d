"""A hypothesis state machine over an engagement's lifecycle on real PostgreSQL and the real
wallet: funded (coins or card), then start / complete / cancel / dispute / resolve (and repeats)
in random orders; after every step the ledger's invariants hold — nothing created or lost (what
the customer paid is exactly revenue + contractor + escrow), the escrow never negative and full
while the engagement lives, empty in every final state, and the parts sum to the amount."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from hirepay_dev.procs import ensure_service_token_secret
from hirepay_dev.services import WALLET, RunningService, start_service
from hirepay_platform import identity
from hirepay_platform.db import create_engine, make_session_factory
from hirepay_platform.errors import HirepayError
from jobs.adapters.escrow_ledger import WalletEscrowLedger
from jobs.adapters.offer_funds import WalletAccounts
from jobs.adapters.unit_of_work import SqlJobsUnitOfWork
from jobs.domain import commands
from jobs.domain.escrow import StepState
from jobs.domain.marketplace import COIN_UNIT, EngagementState
from jobs.service_layer.deps import Deps
from jobs.service_layer.marketplace import escrow, job_payments
from tests.support.escrow_support import (
    FakeCardRefunds,
    FakeJobPayments,
    balances,
    card_funded_engagement,
    issue,
    new_parties,
    post_job,
)
from tests.support.jobs_fakes import FakeParticipants, make_config

ADMIN = commands.Actor("admin_1", "admin")
FINAL = (EngagementState.COMPLETED, EngagementState.CANCELLED)


@pytest.fixture(scope="module")
def world(make_service_database) -> Iterator[tuple[asyncio.AbstractEventLoop, Deps]]:
    identity.configure("jobs", ensure_service_token_secret())
    wallet: RunningService = start_service(
        WALLET, make_service_database("wallet"), log_name="escrow-machine-wallet"
    )
    jobs_url = make_service_database("jobs")
    loop = asyncio.new_event_loop()
    engine = create_engine(jobs_url, pool_size=5, max_overflow=5)
    sessions = make_session_factory(engine)
    ledger = WalletEscrowLedger(WalletAccounts(wallet.target, 5.0))
    deps = Deps.build(
        lambda: SqlJobsUnitOfWork(sessions),
        make_config(),
        FakeParticipants(),
        escrow=ledger,
        card_refunds=FakeCardRefunds(),
        job_payments=FakeJobPayments(),
    )
    yield loop, deps
    loop.run_until_complete(ledger.accounts.close())
    loop.run_until_complete(engine.dispose())
    loop.close()
    wallet.stop()


class EngagementLifecycle(RuleBasedStateMachine):
    loop: asyncio.AbstractEventLoop
    deps: Deps

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    @property
    def ledger(self) -> WalletEscrowLedger:
        assert isinstance(self.deps.escrow, WalletEscrowLedger)
        return self.deps.escrow

    @initialize(amount=st.integers(1, 10_000_000), card=st.booleans())
    def fund(self, amount: int, card: bool) -> None:
        self.amount = amount
        if card:
            self.p = self.run(new_parties(self.ledger, "USD"))
            self.paid = amount
            self.run(card_funded_engagement(self.deps, self.ledger, self.p, amount))
        else:
            self.p = self.run(new_parties(self.ledger, COIN_UNIT))
            self.paid = 0
            self.run(issue(self.ledger, self.p.customer, COIN_UNIT, amount))
            self.p.job_id = self.run(post_job(self.deps, self.p.customer))
            view = self.run(
                job_payments.pay_with_coins(
                    commands.PayJobWithCoins(
                        commands.Actor(self.p.customer, "customer"),
                        self.p.job_id,
                        self.p.contractor,
                        amount,
                        uuid.uuid4().hex,
                    ),
                    self.deps,
                )
            )
            self.p.engagement_id = view.engagement.id
        self.customer = commands.Actor(self.p.customer, "customer")
        self.contractor = commands.Actor(self.p.contractor, "contractor")

    def _try(self, coro) -> bool:  # type: ignore[no-untyped-def]
        before = self.run(balances(self.ledger, self.p))
        try:
            self.run(coro)
            return True
        except HirepayError:
            # A refused step changes nothing.
            assert self.run(balances(self.ledger, self.p)) == before
            return False

    def _on(self, actor: commands.Actor) -> commands.EngagementCommand:
        return commands.EngagementCommand(actor, self.p.engagement_id)

    def _state(self) -> tuple[EngagementState, list[StepState], str]:
        view = self.run(escrow.get_engagement(self._on(ADMIN), self.deps))
        dispute = view.dispute.id if view.dispute and view.dispute.resolution is None else ""
        return view.engagement.state, [s.state for s in view.steps], dispute

    @rule()
    def start(self) -> None:
        self._try(escrow.start_work(self._on(self.contractor), self.deps))

    @rule()
    def complete(self) -> None:
        state = self._state()[0]
        done = self._try(escrow.complete(self._on(self.customer), self.deps))
        assert done == (state is EngagementState.IN_PROGRESS)

    @rule()
    def cancel(self) -> None:
        state = self._state()[0]
        done = self._try(escrow.cancel(self._on(self.customer), self.deps))
        assert done == (state in (EngagementState.ASSIGNED, EngagementState.IN_PROGRESS))

    @rule(by_contractor=st.booleans())
    def dispute(self, by_contractor: bool) -> None:
        who = self.contractor if by_contractor else self.customer
        self._try(
            escrow.open_dispute(
                commands.OpenDispute(who, self.p.engagement_id, "disagreement"), self.deps
            )
        )

    @rule(how=st.sampled_from(["release", "refund", "split"]), share=st.floats(0, 1))
    def resolve(self, how: str, share: float) -> None:
        state, _, dispute_id = self._state()
        if not dispute_id:
            return
        escrow_minor = self.amount - self.amount * 1_000 // 10_000
        done = self._try(
            escrow.resolve_dispute(
                commands.ResolveDispute(ADMIN, dispute_id, how, int(escrow_minor * share)),
                self.deps,
            )
        )
        assert done and state is EngagementState.DISPUTED

    @invariant()
    def ledger_is_whole(self) -> None:
        if not hasattr(self, "p"):
            return
        b = self.run(balances(self.ledger, self.p))
        state, steps, _ = self._state()
        fee1 = self.amount * 1_000 // 10_000
        assert b["escrow"] >= 0
        # What left the customer: their coins, or (a card) what the provider holds for them.
        coins = self.p.unit == COIN_UNIT
        paid = self.amount - b["customer"] if coins else -b["clearing"]
        # Nothing created or lost: what the customer paid is exactly where it went.
        assert paid == b["revenue"] + b["contractor"] + b["escrow"]
        assert all(s is StepState.DONE for s in steps)
        if state in FINAL:
            assert b["escrow"] == 0
        else:
            assert b["escrow"] == self.amount - fee1 and b["revenue"] == fee1
        if state is EngagementState.COMPLETED:
            assert b["revenue"] + b["contractor"] == self.amount  # the parts sum to the offer


def test_engagement_lifecycle_keeps_the_ledger_whole(world) -> None:
    loop, deps = world
    EngagementLifecycle.loop = loop
    EngagementLifecycle.deps = deps
    run = settings(
        max_examples=12,
        stateful_step_count=8,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    EngagementLifecycle.TestCase.settings = run
    EngagementLifecycle.TestCase().runTest()
