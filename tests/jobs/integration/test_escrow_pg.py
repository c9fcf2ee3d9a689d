"""The escrow on real PostgreSQL and the real wallet process (ESC-4, ESC-7, ESC-8, ESC-11): every
balance asserted to the cent — customer, contractor, platform revenue, escrow, provider clearing —
for completion, cancellation before and after work started, each dispute resolution, a refused
second completion, completion racing a dispute, a coin job payment short of coins, and a money
step left pending by a wallet outage and finished by recovery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest

from hirepay_dev.procs import ensure_service_token_secret
from hirepay_dev.services import WALLET, RunningService, start_service
from hirepay_platform import identity
from hirepay_platform.db import create_engine, make_session_factory
from hirepay_platform.errors import HirepayError
from jobs.adapters.escrow_ledger import WalletEscrowLedger
from jobs.adapters.offer_funds import WalletAccounts
from jobs.adapters.unit_of_work import SqlJobsUnitOfWork
from jobs.domain import commands
from jobs.domain.audit import Check
from jobs.domain.escrow import CancelPolicy, StepKind, StepState
from jobs.domain.events import EventType
from jobs.domain.marketplace import COIN_UNIT, EngagementState, MarketJobStatus
from jobs.domain.posting_saga import SettlementEvent, TryResult, TryState
from jobs.service_layer.deps import Deps
from jobs.service_layer.handlers import audit, settlement
from jobs.service_layer.marketplace import escrow, job_payments, money_steps
from tests.support.escrow_support import (
    FakeCardRefunds,
    FakeJobPayments,
    FlakyLedger,
    Parties,
    balances,
    card_funded_engagement,
    issue,
    issue_and_fund,
    new_parties,
    post_job,
)
from tests.support.jobs_fakes import FakeParticipants, make_config

ADMIN = commands.Actor("admin_1", "admin")


@pytest.fixture(scope="module")
def wallet(make_service_database) -> Iterator[RunningService]:
    identity.configure("jobs", ensure_service_token_secret())
    service = start_service(WALLET, make_service_database("wallet"), log_name="escrow-wallet")
    yield service
    service.stop()


@pytest.fixture
async def ledger(wallet: RunningService) -> AsyncIterator[WalletEscrowLedger]:
    ledger = WalletEscrowLedger(WalletAccounts(wallet.target, 5.0))
    yield ledger
    await ledger.accounts.close()


@pytest.fixture(scope="module")
async def sessions(make_service_database):
    url = await asyncio.to_thread(make_service_database, "jobs")
    engine = create_engine(url, pool_size=20, max_overflow=10)
    yield make_session_factory(engine)
    await engine.dispose()


@pytest.fixture
def refunds() -> FakeCardRefunds:
    return FakeCardRefunds()


@pytest.fixture
def deps(sessions, ledger, refunds) -> Deps:
    return Deps.build(
        lambda: SqlJobsUnitOfWork(sessions),
        make_config(retry_base_seconds=0.0, lease_seconds=0.0),
        FakeParticipants(),
        escrow=ledger,
        card_refunds=refunds,
        job_payments=FakeJobPayments(),
    )


def customer_of(p: Parties) -> commands.Actor:
    return commands.Actor(p.customer, "customer")


def contractor_of(p: Parties) -> commands.Actor:
    return commands.Actor(p.contractor, "contractor")


def on(p: Parties, actor: commands.Actor, reason: str = "") -> commands.EngagementCommand:
    return commands.EngagementCommand(actor, p.engagement_id, reason)


async def coin_funded(deps: Deps, ledger: WalletEscrowLedger, amount: int, coins: int) -> Parties:
    """ESC-4: a customer with `coins` pays `amount` COIN for a job; the engagement assigned."""
    p = await new_parties(ledger, COIN_UNIT)
    await issue(ledger, p.customer, COIN_UNIT, coins)
    p.job_id = await post_job(deps, p.customer)
    view = await job_payments.pay_with_coins(
        commands.PayJobWithCoins(customer_of(p), p.job_id, p.contractor, amount, "pay-1"), deps
    )
    p.engagement_id = view.engagement.id
    assert view.engagement.state is EngagementState.ASSIGNED
    return p


async def test_coin_job_payment_escrows_at_once_and_completion_pays_20_70(deps, ledger) -> None:
    p = await coin_funded(deps, ledger, 100_000, 100_000)
    assert await balances(ledger, p) == {
        "customer": 0, "contractor": 0, "revenue": 10_000, "escrow": 90_000,
    }  # fmt: skip
    async with deps.uow as uow:
        job = await uow.market_jobs.get(p.job_id)
    assert job is not None and job.status is MarketJobStatus.ASSIGNED
    assert job.contractor_id == p.contractor
    # The same request again pays nothing more.
    again = await job_payments.pay_with_coins(
        commands.PayJobWithCoins(customer_of(p), p.job_id, p.contractor, 100_000, "pay-1"), deps
    )
    assert again.engagement.id == p.engagement_id
    await escrow.start_work(on(p, contractor_of(p)), deps)
    view = await escrow.complete(on(p, customer_of(p)), deps)
    assert view.engagement.state is EngagementState.COMPLETED
    assert [(s.kind, s.state) for s in view.steps] == [
        (StepKind.FUND, StepState.DONE),
        (StepKind.COMPLETE, StepState.DONE),
    ]
    assert await balances(ledger, p) == {
        "customer": 0, "contractor": 70_000, "revenue": 30_000, "escrow": 0,
    }  # fmt: skip
    with pytest.raises(HirepayError) as twice:
        await escrow.complete(on(p, customer_of(p)), deps)
    assert twice.value.reason == "INVALID_TRANSITION"
    assert await balances(ledger, p) == {
        "customer": 0, "contractor": 70_000, "revenue": 30_000, "escrow": 0,
    }  # fmt: skip
    async with deps.uow as uow:
        events = await uow.outbox.for_subject(p.engagement_id)
    assert [e.type for e in events] == [EventType.ENGAGEMENT_COMPLETED]
    assert events[0].data["toContractorMinor"] == 70_000


async def test_coin_payment_short_of_coins_is_refused_and_changes_nothing(deps, ledger) -> None:
    p = await new_parties(ledger, COIN_UNIT)
    await issue(ledger, p.customer, COIN_UNIT, 500)
    p.job_id = await post_job(deps, p.customer)
    with pytest.raises(HirepayError) as refused:
        await job_payments.pay_with_coins(
            commands.PayJobWithCoins(customer_of(p), p.job_id, p.contractor, 1_000), deps
        )
    assert refused.value.reason == "INSUFFICIENT_FUNDS"
    assert await balances(ledger, p) == {"customer": 500, "contractor": 0, "revenue": 0}
    async with deps.uow as uow:
        job = await uow.market_jobs.get(p.job_id)
    assert job is not None and job.status is MarketJobStatus.OPEN and not job.accepting_offer_id


async def test_cancel_before_start_returns_everything_including_the_fee(deps, ledger) -> None:
    p = await coin_funded(deps, ledger, 100_000, 100_000)
    view = await escrow.cancel(on(p, customer_of(p), "changed my mind"), deps)
    assert view.engagement.state is EngagementState.CANCELLED
    assert await balances(ledger, p) == {
        "customer": 100_000, "contractor": 0, "revenue": 0, "escrow": 0,
    }  # fmt: skip
    async with deps.uow as uow:
        job = await uow.market_jobs.get(p.job_id)
    assert job is not None and job.status is MarketJobStatus.OPEN  # takes offers again


async def test_cancel_after_start_returns_the_escrow_and_keeps_the_fee(deps, ledger) -> None:
    p = await coin_funded(deps, ledger, 100_001, 100_001)  # fee1 = 10_000 (floor)
    await escrow.start_work(on(p, contractor_of(p)), deps)
    await escrow.cancel(on(p, customer_of(p)), deps)
    assert await balances(ledger, p) == {
        "customer": 90_001, "contractor": 0, "revenue": 10_000, "escrow": 0,
    }  # fmt: skip


async def test_card_cancel_refunds_through_the_provider_and_clearing(deps, ledger, refunds) -> None:
    p = await new_parties(ledger, "USD")
    await card_funded_engagement(deps, ledger, p, 100_000)
    assert await balances(ledger, p) == {
        "customer": 0, "contractor": 0, "revenue": 10_000, "escrow": 90_000, "clearing": -100_000,
    }  # fmt: skip
    view = await escrow.cancel(on(p, customer_of(p)), deps)
    (step,) = view.steps
    assert step.state is StepState.DONE and step.refund_id
    assert refunds.refunds == {f"engagement:{p.engagement_id}:cancel": (step.payment_id, 100_000)}
    assert await balances(ledger, p) == {
        "customer": 0, "contractor": 0, "revenue": 0, "escrow": 0, "clearing": 0,
    }  # fmt: skip
    credits = await ledger.credits_of(f"payment:{step.payment_id}:refund:{step.refund_id}")
    assert sum(credits.values()) == 100_000  # the refund's booking, under the shared id


async def test_card_completion_pays_the_contractor_in_the_currency(deps, ledger) -> None:
    p = await new_parties(ledger, "USD")
    await card_funded_engagement(deps, ledger, p, 100_000)  # $1,000.00
    await escrow.start_work(on(p, contractor_of(p)), deps)
    await escrow.complete(on(p, customer_of(p)), deps)
    assert await balances(ledger, p) == {
        "customer": 0, "contractor": 70_000, "revenue": 30_000, "escrow": 0, "clearing": -100_000,
    }  # fmt: skip


async def test_a_one_cent_card_offer_takes_no_fee_and_pays_the_contractor_it_all(
    deps, ledger
) -> None:
    # Both fees round down to 0: no zero legs are booked (the wallet refuses them) and every
    # cent reaches the contractor.
    p = await new_parties(ledger, "USD")
    await card_funded_engagement(deps, ledger, p, 1)
    assert (await balances(ledger, p))["escrow"] == 1
    await escrow.start_work(on(p, contractor_of(p)), deps)
    await escrow.complete(on(p, customer_of(p)), deps)
    assert await balances(ledger, p) == {
        "customer": 0, "contractor": 1, "revenue": 0, "escrow": 0, "clearing": -1,
    }  # fmt: skip


async def _disputed(deps: Deps, ledger: WalletEscrowLedger, started: bool) -> tuple[Parties, str]:
    p = await coin_funded(deps, ledger, 100_000, 100_000)
    if started:
        await escrow.start_work(on(p, contractor_of(p)), deps)
    view = await escrow.open_dispute(
        commands.OpenDispute(contractor_of(p), p.engagement_id, "not paid for extra work"), deps
    )
    assert view.engagement.state is EngagementState.DISPUTED and view.dispute is not None
    # Frozen: neither completion nor cancellation moves the escrow.
    for frozen in (escrow.complete, escrow.cancel):
        with pytest.raises(HirepayError) as caught:
            await frozen(on(p, customer_of(p)), deps)
        assert caught.value.reason == "ESCROW_FROZEN"
    assert (await balances(ledger, p))["escrow"] == 90_000
    return p, view.dispute.id


def resolve(dispute_id: str, how: str, contractor_minor: int = 0) -> commands.ResolveDispute:
    return commands.ResolveDispute(ADMIN, dispute_id, how, contractor_minor, "decided")


async def test_dispute_release_pays_the_normal_split_once(deps, ledger) -> None:
    p, dispute_id = await _disputed(deps, ledger, started=True)
    view = await escrow.resolve_dispute(resolve(dispute_id, "release"), deps)
    assert view.engagement.state is EngagementState.COMPLETED
    assert await balances(ledger, p) == {
        "customer": 0, "contractor": 70_000, "revenue": 30_000, "escrow": 0,
    }  # fmt: skip
    with pytest.raises(HirepayError) as again:
        await escrow.resolve_dispute(resolve(dispute_id, "refund"), deps)
    assert again.value.reason == "DISPUTE_ALREADY_RESOLVED"
    assert (await balances(ledger, p))["contractor"] == 70_000


async def test_dispute_refund_returns_the_escrow_and_keeps_the_fee(deps, ledger) -> None:
    p, dispute_id = await _disputed(deps, ledger, started=False)
    await escrow.resolve_dispute(resolve(dispute_id, "refund"), deps)
    assert await balances(ledger, p) == {
        "customer": 90_000, "contractor": 0, "revenue": 10_000, "escrow": 0,
    }  # fmt: skip


async def test_dispute_split_gives_an_explicit_amount(deps, ledger) -> None:
    p, dispute_id = await _disputed(deps, ledger, started=True)
    with pytest.raises(HirepayError) as too_much:
        await escrow.resolve_dispute(resolve(dispute_id, "split", 90_001), deps)
    assert too_much.value.reason == "VALIDATION_FAILED"
    view = await escrow.resolve_dispute(resolve(dispute_id, "split", 50_000), deps)
    assert view.engagement.state is EngagementState.CANCELLED
    assert view.dispute is not None and view.dispute.contractor_minor == 50_000
    assert await balances(ledger, p) == {
        "customer": 40_000, "contractor": 50_000, "revenue": 10_000, "escrow": 0,
    }  # fmt: skip
    async with deps.uow as uow:
        events = await uow.outbox.for_subject(dispute_id)
    assert [e.type for e in events] == [EventType.DISPUTE_OPENED, EventType.DISPUTE_RESOLVED]


async def test_only_parties_see_an_engagement_and_only_admins_resolve(deps, ledger) -> None:
    p, dispute_id = await _disputed(deps, ledger, started=False)
    stranger = commands.Actor("someone_else", "customer")
    with pytest.raises(HirepayError) as hidden:
        await escrow.get_engagement(on(p, stranger), deps)
    assert hidden.value.reason == "ENGAGEMENT_NOT_FOUND"
    with pytest.raises(HirepayError) as denied:
        await escrow.resolve_dispute(
            commands.ResolveDispute(customer_of(p), dispute_id, "refund"), deps
        )
    assert denied.value.reason == "PERMISSION_DENIED"
    page = await escrow.list_disputes(commands.ListDisputes(ADMIN, "open", page_size=200), deps)
    assert dispute_id in [d.id for d in page.disputes]


async def test_completion_racing_a_dispute_moves_the_money_once(deps, ledger) -> None:
    for _ in range(3):
        p = await coin_funded(deps, ledger, 100_000, 100_000)
        await escrow.start_work(on(p, contractor_of(p)), deps)
        done, disputed = await asyncio.gather(
            escrow.complete(on(p, customer_of(p)), deps.fresh()),
            escrow.open_dispute(
                commands.OpenDispute(contractor_of(p), p.engagement_id, "stop"), deps.fresh()
            ),
            return_exceptions=True,
        )
        winners = [r for r in (done, disputed) if not isinstance(r, BaseException)]
        assert len(winners) == 1
        after = await balances(ledger, p)
        if isinstance(done, BaseException):
            assert after == {"customer": 0, "contractor": 0, "revenue": 10_000, "escrow": 90_000}
        else:
            assert after == {"customer": 0, "contractor": 70_000, "revenue": 30_000, "escrow": 0}


async def test_a_step_left_pending_by_a_wallet_outage_is_finished_by_recovery(deps, ledger) -> None:
    p = await coin_funded(deps, ledger, 100_000, 100_000)
    await escrow.start_work(on(p, contractor_of(p)), deps)
    flaky = FlakyLedger(ledger, failures=1)
    view = await escrow.complete(on(p, customer_of(p)), replace(deps, escrow=flaky))
    assert view.engagement.state is EngagementState.COMPLETED
    assert [s.state for s in view.steps if s.kind is StepKind.COMPLETE] == [StepState.PENDING]
    assert (await balances(ledger, p))["escrow"] == 90_000
    # Left pending past the grace (none here), the auditor reports it; once posted, no more.
    (step,) = [s for s in view.steps if s.kind is StepKind.COMPLETE]
    no_grace = replace(deps, config=replace(deps.config, audit_grace_seconds=0.0))
    assert await stuck_steps(no_grace) >= {step.transfer_id}
    # Two recovery workers at once: the step is taken by one and posted once.
    await asyncio.gather(
        money_steps.recover_due(deps.fresh()), money_steps.recover_due(deps.fresh())
    )
    assert await balances(ledger, p) == {
        "customer": 0, "contractor": 70_000, "revenue": 30_000, "escrow": 0,
    }  # fmt: skip
    assert step.transfer_id not in await stuck_steps(no_grace)


async def stuck_steps(deps: Deps) -> set[str]:
    """The escrow steps the consistency auditor reports stuck (OPS-3)."""
    report = await audit.run_audit(commands.RunAudit(), deps)
    return {v.subject_id for v in report.violations if v.check is Check.ESCROW_STEP_STUCK}


async def test_policy_may_forbid_cancelling_once_work_started(deps, ledger) -> None:
    strict = replace(deps, config=make_config(cancel_policy=CancelPolicy(cancel_after_start=False)))
    p = await coin_funded(strict, ledger, 10_000, 10_000)
    await escrow.start_work(on(p, contractor_of(p)), strict)
    with pytest.raises(HirepayError) as refused:
        await escrow.cancel(on(p, customer_of(p)), strict)
    assert refused.value.reason == "INVALID_TRANSITION"
    assert (await balances(ledger, p))["escrow"] == 9_000


async def _book_job_payment(ledger: WalletEscrowLedger, p: Parties, payment_id: str, coins: int):
    """What payments books when a direct job payment is captured (MARKETPLACE.md, ESC-5): the
    coins issued to the payer and, in the same transfer, fee1 to revenue and the rest to escrow."""
    await issue_and_fund(ledger, p, payment_id, coins)


def captured(engagement_id: str, payment_id: str, cursor: int) -> SettlementEvent:
    return SettlementEvent(
        f"evt_{cursor}",
        cursor,
        "payment.captured",
        f"gtx_{payment_id}",
        "payment",
        TryResult(state=TryState.CAPTURED, payment_id=payment_id),
        {"type": "job_payment", "purpose": "job_payment", "engagement_id": engagement_id},
    )


async def test_direct_job_payment_is_assigned_once_by_its_captured_event(deps, ledger) -> None:
    p = await new_parties(ledger, COIN_UNIT)
    p.job_id = await post_job(deps, p.customer)
    view, session = await job_payments.start_job_payment(
        commands.StartJobPayment(
            customer_of(p), p.job_id, p.contractor, 100_000, "USD", request_id="jp-1"
        ),
        deps,
    )
    p.engagement_id = view.engagement.id
    assert view.engagement.state is EngagementState.OPEN
    assert session.checkout_url and view.engagement.payment_id == session.payment_id
    # Another payment cannot take the job meanwhile.
    with pytest.raises(HirepayError) as held:
        await job_payments.pay_with_coins(
            commands.PayJobWithCoins(customer_of(p), p.job_id, "ctr_other", 10), deps
        )
    assert held.value.reason == "JOB_NOT_OPEN"
    await _book_job_payment(ledger, p, session.payment_id, 100_000)
    event = captured(p.engagement_id, session.payment_id, 1)
    consume = commands.ApplySettlementEvent
    assert await settlement.apply_settlement_event(consume(event, "escrow-tests"), deps)
    # The same event again (a redelivery) changes nothing.
    assert not await settlement.apply_settlement_event(consume(event, "escrow-tests"), deps)
    got = await escrow.get_engagement(on(p, customer_of(p)), deps)
    e = got.engagement
    assert e.state is EngagementState.ASSIGNED and e.escrow_account_id
    assert (e.amount_minor, e.fee1_minor, e.escrow_minor) == (100_000, 10_000, 90_000)
    await escrow.start_work(on(p, contractor_of(p)), deps)
    await escrow.complete(on(p, customer_of(p)), deps)
    assert await balances(ledger, p) == {
        "customer": 0, "contractor": 70_000, "revenue": 30_000, "escrow": 0,
    }  # fmt: skip


async def test_a_job_payment_captured_after_cancellation_goes_back(deps, ledger) -> None:
    p = await new_parties(ledger, COIN_UNIT)
    p.job_id = await post_job(deps, p.customer)
    view, session = await job_payments.start_job_payment(
        commands.StartJobPayment(customer_of(p), p.job_id, p.contractor, 5_000, "USD"), deps
    )
    p.engagement_id = view.engagement.id
    cancelled = await escrow.cancel(on(p, customer_of(p)), deps)
    assert cancelled.engagement.state is EngagementState.CANCELLED and not cancelled.steps
    await _book_job_payment(ledger, p, session.payment_id, 5_000)
    event = captured(p.engagement_id, session.payment_id, 2)
    await settlement.apply_settlement_event(commands.ApplySettlementEvent(event, "x"), deps)
    await settlement.apply_settlement_event(commands.ApplySettlementEvent(event, "x"), deps)
    assert await balances(ledger, p) == {
        "customer": 5_000, "contractor": 0, "revenue": 0, "escrow": 0,
    }  # fmt: skip
