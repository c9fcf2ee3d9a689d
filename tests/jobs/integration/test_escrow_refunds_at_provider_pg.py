"""Offer money refunded at the provider, outside the escrow (ESC-1, ESC-8), on real PostgreSQL and
the real wallet process: every balance asserted to the cent — customer, contractor, revenue,
escrow, provider clearing and the engagement's receivable — for a full refund while the escrow
holds the money (unwound, the engagement cancelled), a partial one (owed, the escrow frozen by a
dispute) followed by the rest (unwound, the debt settled), one after completion (owed, reported
by the auditor as such), twin events applied concurrently, a refund racing the completion, the
engagement's own cancellation refund (never booked twice) and a wallet outage; and the
engagement's own refund meeting one made at the provider (netted, never stuck, never refunded
twice): an admin's resolution after a partial refund, a refusal before the refund's event is
booked (a resolution, a cancellation just before a full refund), and the cancellation racing the
event."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from hirepay_dev.procs import ensure_service_token_secret
from hirepay_dev.services import WALLET, RunningService, start_service
from hirepay_platform import identity
from hirepay_platform.db import create_engine, make_session_factory
from hirepay_platform.errors import ErrorKind, HirepayError
from jobs.adapters.escrow_ledger import WalletEscrowLedger
from jobs.adapters.offer_funds import WalletAccounts
from jobs.adapters.unit_of_work import SqlJobsUnitOfWork
from jobs.domain import commands
from jobs.domain.audit import Check
from jobs.domain.escrow import (
    AtProviderOutcome,
    DisputeState,
    MoneyStep,
    StepKind,
    StepState,
    receivable,
)
from jobs.domain.events import EventType
from jobs.domain.marketplace import (
    EngagementState,
    FundingSource,
    MarketJobStatus,
    Offer,
    OfferState,
    engagement_id_for,
)
from jobs.domain.posting_saga import SettlementEvent, TryResult, TryState
from jobs.service_layer.deps import Deps
from jobs.service_layer.handlers import audit, settlement
from jobs.service_layer.marketplace import escrow, money_steps
from jobs.service_layer.marketplace.refunds_at_provider import (
    EngagementNotBookedYet,
    apply_refund_event,
)
from tests.support.escrow_support import (
    FakeCardRefunds,
    FakeJobPayments,
    FlakyLedger,
    Parties,
    balance,
    balances,
    card_funded_engagement,
    new_parties,
    post_job,
)
from tests.support.jobs_fakes import FakeParticipants, make_config


@pytest.fixture(scope="module")
def wallet(make_service_database) -> Iterator[RunningService]:
    identity.configure("jobs", ensure_service_token_secret())
    service = start_service(WALLET, make_service_database("wallet"), log_name="escrow-ref-wallet")
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


def build(sessions, ledger, refunds) -> Deps:
    return Deps.build(
        lambda: SqlJobsUnitOfWork(sessions),
        make_config(retry_base_seconds=0.0, lease_seconds=0.0, audit_grace_seconds=0),
        FakeParticipants(),
        escrow=ledger,
        card_refunds=refunds,
        job_payments=FakeJobPayments(),
    )


@pytest.fixture
def deps(sessions, ledger, refunds) -> Deps:
    return build(sessions, ledger, refunds)


async def funded(deps: Deps, ledger: WalletEscrowLedger, amount: int = 100_000) -> Parties:
    """A card offer's engagement ($1,000.00: $100 fee to revenue, $900 in escrow)."""
    p = await new_parties(ledger, "USD")
    p.baseline["receivable"] = 0
    await card_funded_engagement(deps, ledger, p, amount)
    return p


async def everything(ledger: WalletEscrowLedger, p: Parties) -> dict[str, int]:
    """The engagement's balances with its receivable (what is owed for it)."""
    found = await balances(ledger, p)
    found["receivable"] = await balance(ledger, receivable(p.engagement_id, p.unit))
    return found


async def payment_of(deps: Deps, p: Parties) -> str:
    async with deps.uow as uow:
        engagement = await uow.engagements.get(p.engagement_id)
    assert engagement is not None
    return engagement.payment_id


def refunded_event(p: Parties, payment_id: str, tag: str = "1") -> SettlementEvent:
    """payments' `payment.refunded` on the marketplace stream (its content is never trusted)."""
    offer_id = f"offer_{p.engagement_id.removeprefix('eng_')}"
    return SettlementEvent(
        f"evt_{tag}_{payment_id}",
        1,
        "payment.refunded",
        f"saga_{offer_id}",
        "payments",
        TryResult(TryState.REFUNDED, payment_id, "REFUNDED"),
        {"type": "marketplace_offer", "offer_id": offer_id, "subsystem": "marketplace"},
    )


async def engagement_state(deps: Deps, p: Parties) -> EngagementState:
    async with deps.uow as uow:
        engagement = await uow.engagements.get(p.engagement_id)
    assert engagement is not None
    return engagement.state


async def test_a_full_refund_while_held_unwinds_the_escrow_to_clearing(deps, ledger, refunds):
    p = await funded(deps, ledger)
    pid = await payment_of(deps, p)
    refund_id = refunds.at_provider(pid, 100_000)
    assert await apply_refund_event(refunded_event(p, pid), deps) is True
    # The provider paid the customer back: the escrow and the fee return to clearing, nothing
    # to the customer's wallet, nothing owed.
    assert await everything(ledger, p) == {
        "customer": 0, "contractor": 0, "revenue": 0, "escrow": 0, "clearing": 0,
        "receivable": 0,
    }  # fmt: skip
    credits = await ledger.credits_of(f"payment:{pid}:refund:{refund_id}")
    assert sum(credits.values()) == 100_000  # under payments' id: the ledger auditor finds it
    view = await escrow.get_engagement(
        commands.EngagementCommand(commands.Actor(p.contractor, "contractor"), p.engagement_id),
        deps,
    )
    assert view.engagement.state is EngagementState.CANCELLED
    async with deps.uow as uow:
        job = await uow.market_jobs.get(p.job_id)
        (booked,) = await uow.escrow_refunds.for_engagement(p.engagement_id)
        events = await uow.outbox.for_subject(refund_id)
    assert job is not None and job.status is MarketJobStatus.OPEN
    assert (booked.outcome, booked.state) == (AtProviderOutcome.UNWOUND, StepState.DONE)
    assert [e.type for e in events] == [EventType.ENGAGEMENT_REFUNDED_AT_PROVIDER]
    assert events[0].data["contractorId"] == p.contractor
    # The event again (a redelivery) changes nothing.
    assert await apply_refund_event(refunded_event(p, pid, "again"), deps) is False
    assert (await everything(ledger, p))["clearing"] == 0


async def test_twin_events_applied_concurrently_book_the_refund_once(deps, ledger, refunds):
    p = await funded(deps, ledger)
    pid = await payment_of(deps, p)
    refunds.at_provider(pid, 100_000)
    results = await asyncio.gather(
        *(apply_refund_event(refunded_event(p, pid, str(n)), deps.fresh()) for n in range(4))
    )
    assert sorted(results) == [False, False, False, True]
    assert await everything(ledger, p) == {
        "customer": 0, "contractor": 0, "revenue": 0, "escrow": 0, "clearing": 0,
        "receivable": 0,
    }  # fmt: skip


async def test_a_partial_refund_is_owed_and_freezes_the_escrow_until_the_rest(
    deps, ledger, refunds
):
    p = await funded(deps, ledger)
    pid = await payment_of(deps, p)
    refunds.at_provider(pid, 30_000)
    assert await apply_refund_event(refunded_event(p, pid), deps) is True
    # The escrow still holds the money: what the provider gave back is owed, and an admin
    # decides (the escrow frozen by a dispute the system opened).
    assert await everything(ledger, p) == {
        "customer": 0, "contractor": 0, "revenue": 10_000, "escrow": 90_000, "clearing": -70_000,
        "receivable": -30_000,
    }  # fmt: skip
    assert await engagement_state(deps, p) is EngagementState.DISPUTED
    async with deps.uow as uow:
        dispute = await uow.disputes.for_engagement(p.engagement_id)
    assert dispute is not None and dispute.opened_by == "system"
    with pytest.raises(HirepayError) as frozen:
        await escrow.complete(
            commands.EngagementCommand(commands.Actor(p.customer, "customer"), p.engagement_id),
            deps,
        )
    assert frozen.value.reason == "ESCROW_FROZEN"
    # The rest refunded at the provider too: unwound, and the debt settled.
    refunds.at_provider(pid, 70_000)
    assert await apply_refund_event(refunded_event(p, pid, "2"), deps) is True
    assert await everything(ledger, p) == {
        "customer": 0, "contractor": 0, "revenue": 0, "escrow": 0, "clearing": 0,
        "receivable": 0,
    }  # fmt: skip
    assert await engagement_state(deps, p) is EngagementState.CANCELLED
    async with deps.uow as uow:
        dispute = await uow.disputes.for_engagement(p.engagement_id)
    assert dispute is not None and dispute.state is DisputeState.RESOLVED


async def test_a_refund_after_completion_is_owed_and_audited_as_such(deps, ledger, refunds):
    p = await funded(deps, ledger)
    pid = await payment_of(deps, p)
    contractor = commands.Actor(p.contractor, "contractor")
    await escrow.start_work(commands.EngagementCommand(contractor, p.engagement_id), deps)
    await escrow.complete(
        commands.EngagementCommand(commands.Actor(p.customer, "customer"), p.engagement_id), deps
    )
    refund_id = refunds.at_provider(pid, 100_000)
    assert await apply_refund_event(refunded_event(p, pid), deps) is True
    # The contractor was paid: no money created or lost, the refund is owed for the engagement.
    assert await everything(ledger, p) == {
        "customer": 0, "contractor": 70_000, "revenue": 30_000, "escrow": 0, "clearing": 0,
        "receivable": -100_000,
    }  # fmt: skip
    assert await engagement_state(deps, p) is EngagementState.COMPLETED
    report = await audit.run_audit(commands.RunAudit(), deps)
    owed = [v for v in report.violations if v.check is Check.ESCROW_REFUND_OWED]
    assert [v.subject_id for v in owed if p.engagement_id in v.detail] == [
        f"payment:{pid}:refund:{refund_id}"
    ]


async def test_a_refund_racing_the_completion_balances_either_way(deps, ledger, refunds):
    for _ in range(3):
        p = await funded(deps, ledger)
        pid = await payment_of(deps, p)
        contractor = commands.Actor(p.contractor, "contractor")
        await escrow.start_work(commands.EngagementCommand(contractor, p.engagement_id), deps)
        refunds.at_provider(pid, 100_000)
        customer = commands.Actor(p.customer, "customer")
        completed, applied = await asyncio.gather(
            escrow.complete(commands.EngagementCommand(customer, p.engagement_id), deps.fresh()),
            apply_refund_event(refunded_event(p, pid), deps.fresh()),
            return_exceptions=True,
        )
        assert applied is True
        found = await everything(ledger, p)
        assert sum(found.values()) == 0 and found["clearing"] == 0  # nothing created or lost
        if isinstance(completed, HirepayError):  # the refund came first: nothing to complete
            assert completed.reason == "INVALID_TRANSITION"
            assert found == {
                "customer": 0, "contractor": 0, "revenue": 0, "escrow": 0, "clearing": 0,
                "receivable": 0,
            }  # fmt: skip
        else:  # the completion came first: the contractor keeps the pay, the refund is owed
            assert found == {
                "customer": 0, "contractor": 70_000, "revenue": 30_000, "escrow": 0,
                "clearing": 0, "receivable": -100_000,
            }  # fmt: skip


async def test_the_engagements_own_cancellation_refund_is_not_booked_again(deps, ledger, refunds):
    p = await funded(deps, ledger)
    pid = await payment_of(deps, p)
    await escrow.cancel(
        commands.EngagementCommand(commands.Actor(p.customer, "customer"), p.engagement_id), deps
    )
    # payments publishes `payment.refunded` for jobs' own refund too: nothing more moves.
    assert await apply_refund_event(refunded_event(p, pid), deps) is False
    assert await everything(ledger, p) == {
        "customer": 0, "contractor": 0, "revenue": 0, "escrow": 0, "clearing": 0,
        "receivable": 0,
    }  # fmt: skip


async def test_a_wallet_outage_leaves_the_booking_pending_and_the_event_applies_it(
    sessions, ledger, refunds
):
    flaky = FlakyLedger(ledger, failures=1)
    deps = build(sessions, flaky, refunds)
    p = await funded(deps, ledger)
    pid = await payment_of(deps, p)
    refunds.at_provider(pid, 100_000)
    with pytest.raises(HirepayError):
        await apply_refund_event(refunded_event(p, pid), deps)
    async with deps.uow as uow:
        (pending,) = await uow.escrow_refunds.for_engagement(p.engagement_id)
    assert pending.state is StepState.PENDING and pending.attempts == 1
    assert (await everything(ledger, p))["escrow"] == 90_000  # decided, not yet posted
    # The consumer applies the event again (its cursor did not pass it): posted once.
    assert await apply_refund_event(refunded_event(p, pid), deps) is False
    assert await everything(ledger, p) == {
        "customer": 0, "contractor": 0, "revenue": 0, "escrow": 0, "clearing": 0,
        "receivable": 0,
    }  # fmt: skip


async def test_the_marketplace_stream_applies_only_offer_refunds(deps, ledger, refunds):
    p = await funded(deps, ledger)
    pid = await payment_of(deps, p)
    refunds.at_provider(pid, 100_000)
    captured = refunded_event(p, pid, "cap")
    captured = SettlementEvent(
        captured.event_id,
        captured.cursor,
        "payment.captured",
        captured.global_tx_id,
        captured.branch_id,
        TryResult(TryState.CAPTURED, pid, "CAPTURED"),
        captured.metadata,
    )
    burst = commands.ApplySettlementEvents((captured, refunded_event(p, pid)))
    applied = [a async for _, a in settlement.apply_marketplace_events(burst, deps)]
    assert applied == [False, True]
    assert (await everything(ledger, p))["escrow"] == 0


async def test_a_refund_before_the_acceptance_booked_its_engagement_waits(deps, ledger):
    # Captured, the engagement not yet booked (the offer `accepting`): the event is refused as
    # transient, so the consumer applies it again; an offer that ended without an engagement
    # holds nothing to unwind.
    p = await new_parties(ledger, "USD")
    now = deps.clock()
    offer = Offer(
        id=f"offer_{uuid.uuid4().hex}",
        job_id=await post_job(deps, p.customer),
        customer_id=p.customer,
        contractor_id=p.contractor,
        amount_minor=100_000,
        unit="USD",
        funding=FundingSource.CARD,
        state=OfferState.ACCEPTING,
        saga_id=f"saga_{uuid.uuid4().hex}",
        request_id=uuid.uuid4().hex,
        expires_at=now,
        created_at=now,
        updated_at=now,
        payment_id="pay_accepting",
    )
    async with deps.uow as uow:
        await uow.offers.add(offer)
        await uow.commit()
    p.engagement_id = engagement_id_for(offer.id)
    with pytest.raises(EngagementNotBookedYet) as waiting:
        await apply_refund_event(refunded_event(p, "pay_accepting"), deps)
    assert waiting.value.kind is ErrorKind.UNAVAILABLE
    async with deps.uow as uow:
        ended = await uow.offers.get(offer.id, for_update=True)
        assert ended is not None
        ended.close(OfferState.EXPIRED, "capture_failed", now)
        await uow.offers.save(ended)
        await uow.commit()
    assert await apply_refund_event(refunded_event(p, "pay_accepting"), deps) is False


# --------------------------------------------------------------------------- the engagement's own
# refund after a refund made at the provider: netted, never stuck, never refunded twice.

ADMIN = commands.Actor("admin_escrowfix", "admin")


async def captured(deps: Deps, ledger: WalletEscrowLedger, refunds: FakeCardRefunds) -> Parties:
    """A funded engagement whose payment the fake payments knows as captured ($1,000.00), so it
    refuses a refund of more than is left as payments does (PAY-11)."""
    p = await funded(deps, ledger)
    refunds.captured[await payment_of(deps, p)] = 100_000
    return p


async def own_steps(deps: Deps, p: Parties) -> list[MoneyStep]:
    async with deps.uow as uow:
        return await uow.money_steps.for_engagement(p.engagement_id)


async def settled_step(deps: Deps, p: Parties, netted: int, refunded: int) -> None:
    """The engagement's one step is done: `netted` settled the receivable, `refunded` asked."""
    (step,) = await own_steps(deps, p)
    assert step.state is StepState.DONE
    assert (step.netted_minor, step.refund_minor) == (netted, refunded)


async def waiting_step(deps: Deps, p: Parties, refusal: str) -> None:
    """The engagement's one step is still pending, payments having refused its refund."""
    (step,) = await own_steps(deps, p)
    assert step.state is StepState.PENDING and refusal in step.failure


async def audit_of(deps: Deps, p: Parties, pid: str) -> list[Check]:
    """The auditor's findings about the engagement (its steps, its refunds, what is owed)."""
    report = await audit.run_audit(commands.RunAudit(), deps)
    return [
        v.check
        for v in report.violations
        if p.engagement_id in v.subject_id or p.engagement_id in v.detail or pid in v.subject_id
    ]


def cancel_of(p: Parties) -> commands.EngagementCommand:
    return commands.EngagementCommand(commands.Actor(p.customer, "customer"), p.engagement_id)


async def resolve(deps: Deps, p: Parties, how: str, contractor_minor: int = 0) -> None:
    async with deps.uow as uow:
        dispute = await uow.disputes.for_engagement(p.engagement_id)
    assert dispute is not None
    await escrow.resolve_dispute(
        commands.ResolveDispute(ADMIN, dispute.id, how, contractor_minor, "decided"), deps
    )


@pytest.mark.parametrize(
    ("how", "contractor_minor", "asked", "expected"),
    [
        # The escrow back ($900, the fee kept): $300 already back at the provider, $600 refunded.
        ("refund", 0, 60_000, {"contractor": 0, "clearing": -10_000}),
        # $500 to the contractor, $400 back: $300 already, $100 refunded.
        ("split", 50_000, 10_000, {"contractor": 50_000, "clearing": -60_000}),
    ],
)
async def test_a_resolution_after_a_partial_refund_at_the_provider_refunds_only_the_rest(
    deps, ledger, refunds, how, contractor_minor, asked, expected
):
    # ESC-1, ESC-8: $300 refunded at the provider while held (owed, a dispute opened by the
    # system); the admin's resolution gives the customer back what it decides, $300 of which
    # they have already: that part settles the debt, only the rest goes to the provider.
    p = await captured(deps, ledger, refunds)
    pid = await payment_of(deps, p)
    refunds.at_provider(pid, 30_000)
    assert await apply_refund_event(refunded_event(p, pid), deps) is True
    await resolve(deps, p, how, contractor_minor)
    await settled_step(deps, p, 30_000, asked)
    assert refunds.refused == []  # netted when decided: payments never refused it
    assert [n for pay, n in refunds.refunds.values() if pay == pid] == [asked]
    assert await everything(ledger, p) == {
        "customer": 0, "revenue": 10_000, "escrow": 0, "receivable": 0, **expected,
    }  # fmt: skip
    assert await audit_of(deps, p, pid) == []


async def end_by_refund(deps: Deps, p: Parties) -> StepKind:
    """The customer disputes and the admin resolves `refund` (the escrow back, the fee kept)."""
    customer = commands.Actor(p.customer, "customer")
    await escrow.open_dispute(commands.OpenDispute(customer, p.engagement_id, "no show"), deps)
    await resolve(deps, p, "refund")
    return StepKind.RESOLVE


async def end_by_cancel(deps: Deps, p: Parties) -> StepKind:
    """The customer cancels before the work started (the escrow and the fee back)."""
    await escrow.cancel(cancel_of(p), deps)
    return StepKind.CANCEL


@pytest.mark.parametrize(
    ("end", "at_provider", "asked", "fee_kept"),
    [
        # $300 refunded at the provider; the admin's `refund` ($900) refused, $700 left: then
        # netted, $600 refunded under a new request id.
        (end_by_refund, 30_000, 60_000, True),
        # A cancellation just before a full refund at the provider: nothing left to refund;
        # then netted in full, no provider refund made by jobs.
        (end_by_cancel, 100_000, 0, False),
    ],
)
async def test_a_refusal_before_the_refund_at_the_provider_is_booked_is_netted_once_it_is(
    deps, ledger, refunds, end, at_provider, asked, fee_kept
):
    # The engagement ends while a refund made at the provider is known to payments and not yet
    # to jobs (its event not applied): payments refuses the step's refund as more than is left
    # (REFUND_EXCEEDS_CAPTURED, nothing refunded) and the step waits; the event books the refund
    # owed (the engagement ended) and drives the step again: netted, the debt settled.
    p = await captured(deps, ledger, refunds)
    pid = await payment_of(deps, p)
    refunds.at_provider(pid, at_provider)
    kind = await end(deps, p)
    await waiting_step(deps, p, "REFUND_EXCEEDS_CAPTURED")
    assert Check.ESCROW_STEP_STUCK in await audit_of(deps, p, pid)
    assert await apply_refund_event(refunded_event(p, pid), deps) is True
    await settled_step(deps, p, at_provider, asked)
    request = f"engagement:{p.engagement_id}:{kind.value}"
    assert refunds.refused == [request]
    assert [n for pay, n in refunds.refunds.values() if pay == pid] == ([asked] if asked else [])
    if asked:
        assert f"{request}:net:{at_provider}" in refunds.refunds
    assert refunds.refundable(pid) == (10_000 if fee_kept else 0)  # refunded once, in all
    assert await everything(ledger, p) == {
        "customer": 0, "contractor": 0, "revenue": 10_000 if fee_kept else 0, "escrow": 0,
        "clearing": -10_000 if fee_kept else 0, "receivable": 0,
    }  # fmt: skip
    assert await audit_of(deps, p, pid) == []
    # Redelivered, and driven again: nothing more moves.
    assert await apply_refund_event(refunded_event(p, pid, "again"), deps) is False
    await money_steps.drive(p.engagement_id, kind, deps)
    assert refunds.refused == [request]
    assert sum((await everything(ledger, p)).values()) == 0


@pytest.mark.parametrize("at_provider", [100_000, 30_000])
async def test_a_cancel_racing_a_refund_at_the_provider_settles_either_way(
    deps, ledger, refunds, at_provider
):
    # The customer's cancellation and the refund's event run concurrently, the provider having
    # refunded (in full, or $300) meanwhile: whichever takes the engagement first, every step
    # ends final, the ledger balances to the cent, the customer gets back no more than paid.
    for _ in range(6):
        p = await captured(deps, ledger, refunds)
        pid = await payment_of(deps, p)
        refunds.at_provider(pid, at_provider)
        cancelled, applied = await asyncio.gather(
            escrow.cancel(cancel_of(p), deps.fresh()),
            apply_refund_event(refunded_event(p, pid), deps.fresh()),
            return_exceptions=True,
        )
        assert applied is True
        if isinstance(cancelled, HirepayError):
            # The refund came first: unwound (in full), or the escrow frozen (in part).
            assert cancelled.reason == (
                "INVALID_TRANSITION" if at_provider == 100_000 else "ESCROW_FROZEN"
            )
            if at_provider < 100_000:
                await resolve(deps, p, "refund")  # the admin gives the escrow back
        else:
            assert not isinstance(cancelled, BaseException)
        # Driven to the end (the request, the event's kick, or the recovery's next round).
        for step in await own_steps(deps, p):
            await money_steps.drive(p.engagement_id, step.kind, deps)
        steps = await own_steps(deps, p)
        assert all(s.state is StepState.DONE for s in steps)
        found = await everything(ledger, p)
        assert sum(found.values()) == 0  # nothing created or lost
        fee_kept = isinstance(cancelled, HirepayError) and at_provider < 100_000
        assert found == {
            "customer": 0, "contractor": 0, "revenue": 10_000 if fee_kept else 0, "escrow": 0,
            "clearing": -10_000 if fee_kept else 0, "receivable": 0,
        }  # fmt: skip
        # Refunded at the provider in all: everything paid, less the fee a resolution keeps.
        assert refunds.refundable(pid) == (10_000 if fee_kept else 0)
        assert await audit_of(deps, p, pid) == []
