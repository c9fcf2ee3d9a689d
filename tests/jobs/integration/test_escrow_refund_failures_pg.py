"""Refunds of offer money that failed at the provider after they succeeded (Stripe: the card
closed since; ESC-1, ESC-8), reversed by jobs on real PostgreSQL and the real wallet process:
every balance asserted to the cent — customer, contractor, revenue, escrow, provider clearing and
the engagement's receivable — for a refund made at the provider in full (unwound: then owed to
the customer, until a new refund pays it), in part while held (frozen: the debt cancelled, the
admin's resolution refunds the whole escrow), after completion (owed: the debt cancelled), the
engagement's own cancellation refund (owed to the customer), one whose id the step had not
recorded yet, twin events applied concurrently, the reversal racing the admin's resolution, a
wallet outage, and the marketplace stream's routing."""

from __future__ import annotations

import asyncio

import pytest

from hirepay_platform.errors import HirepayError, Unavailable
from jobs.domain import commands
from jobs.domain.audit import Check
from jobs.domain.escrow import AtProviderOutcome, DisputeState, RefundOutcome, StepKind, StepState
from jobs.domain.events import EventType
from jobs.domain.marketplace import EngagementState
from jobs.domain.posting_saga import SettlementEvent, TryResult, TryState
from jobs.service_layer import metrics
from jobs.service_layer.handlers import settlement
from jobs.service_layer.marketplace import escrow, money_steps
from jobs.service_layer.marketplace.refund_failures import apply_refund_failed_event
from jobs.service_layer.marketplace.refunds_at_provider import apply_refund_event
from tests.jobs.integration import test_escrow_refunds_at_provider_pg as base
from tests.jobs.integration.test_escrow_refunds_at_provider_pg import (
    audit_of,
    build,
    cancel_of,
    captured,
    engagement_state,
    everything,
    own_steps,
    payment_of,
    refunded_event,
    resolve,
)
from tests.support.escrow_support import FakeCardRefunds, FlakyLedger, Parties

# The refunds-at-provider tests' fixtures: a wallet process, the jobs database, fake payments.
wallet, sessions, ledger, refunds, deps = (
    base.wallet,
    base.sessions,
    base.ledger,
    base.refunds,
    base.deps,
)


# A $1,000 refund reversed after the escrow and the fee had given it back: clearing has the money
# again, the engagement's receivable holds it for the customer, nothing else moved.
OWED_TO_CUSTOMER = {
    "customer": 0, "contractor": 0, "revenue": 0, "escrow": 0, "clearing": -100_000,
    "receivable": 100_000,
}  # fmt: skip


def failed_event(p: Parties, payment_id: str, tag: str = "1") -> SettlementEvent:
    """payments' `payment.refund_failed` on the marketplace stream (never trusted either)."""
    refunded = refunded_event(p, payment_id, f"failed_{tag}")
    return SettlementEvent(
        refunded.event_id,
        refunded.cursor,
        "payment.refund_failed",
        refunded.global_tx_id,
        refunded.branch_id,
        TryResult(TryState.CAPTURED, payment_id, "CAPTURED"),
        refunded.metadata,
    )


def counted(refund: str) -> float:
    return metrics.ESCROW_REFUNDS_FAILED_AFTER_SUCCESS.labels(refund)._value.get()


async def reversals(deps, p: Parties) -> list:
    async with deps.uow as uow:
        rows = await uow.escrow_refunds.for_engagement(p.engagement_id)
    return [r for r in rows if r.outcome is AtProviderOutcome.REVERSED]


async def test_a_full_refund_at_the_provider_failing_is_owed_to_the_customer(deps, ledger, refunds):
    p = await captured(deps, ledger, refunds)
    pid = await payment_of(deps, p)
    refund_id = refunds.at_provider(pid, 100_000)
    assert await apply_refund_event(refunded_event(p, pid), deps) is True
    seen = counted("at_provider")
    refunds.fail(pid, refund_id)

    assert await apply_refund_failed_event(failed_event(p, pid), deps) is True
    # The money is back at the provider, the customer does not have it: the engagement ended
    # (cancelled, the job reopened), so the receivable holds it for the customer.
    assert await everything(ledger, p) == OWED_TO_CUSTOMER
    credits = await ledger.credits_of(f"payment:{pid}:refund:{refund_id}:failed")
    assert sum(credits.values()) == 100_000  # under payments' name for a reversal
    assert await engagement_state(deps, p) is EngagementState.CANCELLED
    assert counted("at_provider") == seen + 1
    (reversal,) = await reversals(deps, p)
    async with deps.uow as uow:
        events = await uow.outbox.for_subject(reversal.refund_id)
    assert [e.type for e in events] == [EventType.ENGAGEMENT_REFUND_FAILED]
    assert events[0].data["owedToCustomerMinor"] == 100_000
    assert await audit_of(deps, p, pid) == [Check.ESCROW_REFUND_PAYABLE]

    # Redelivered: nothing more moves, nothing counted again.
    assert await apply_refund_failed_event(failed_event(p, pid, "again"), deps) is False
    assert (await everything(ledger, p))["receivable"] == 100_000
    assert counted("at_provider") == seen + 1
    # Operators refund the customer again at the provider (another card): booked owed, which
    # pays the customer's money out of the receivable.
    refunds.at_provider(pid, 100_000)
    assert await apply_refund_event(refunded_event(p, pid, "2"), deps) is True
    assert await everything(ledger, p) == {
        "customer": 0, "contractor": 0, "revenue": 0, "escrow": 0, "clearing": 0,
        "receivable": 0,
    }  # fmt: skip
    assert await audit_of(deps, p, pid) == []


async def test_a_partial_refund_failing_cancels_the_debt_and_the_admin_refunds_it_all(
    deps, ledger, refunds
):
    p = await captured(deps, ledger, refunds)
    pid = await payment_of(deps, p)
    refund_id = refunds.at_provider(pid, 30_000)
    assert await apply_refund_event(refunded_event(p, pid), deps) is True  # frozen, owed
    refunds.fail(pid, refund_id)
    assert await apply_refund_failed_event(failed_event(p, pid), deps) is True
    # Nothing owed any more; the escrow still holds the money, frozen for the admin.
    assert await everything(ledger, p) == {
        "customer": 0, "contractor": 0, "revenue": 10_000, "escrow": 90_000, "clearing": -100_000,
        "receivable": 0,
    }  # fmt: skip
    assert await engagement_state(deps, p) is EngagementState.DISPUTED
    assert await audit_of(deps, p, pid) == []
    # The admin gives the escrow back: the provider is asked for all of it (the $300 never
    # reached the customer: not netted against it).
    await resolve(deps, p, "refund")
    (step,) = await own_steps(deps, p)
    assert (step.state, step.netted_minor, step.refund_minor) == (StepState.DONE, 0, 90_000)
    assert await everything(ledger, p) == {
        "customer": 0, "contractor": 0, "revenue": 10_000, "escrow": 0, "clearing": -10_000,
        "receivable": 0,
    }  # fmt: skip
    assert refunds.refundable(pid) == 10_000
    assert await audit_of(deps, p, pid) == []


async def test_a_refund_after_completion_failing_cancels_the_debt(deps, ledger, refunds):
    p = await captured(deps, ledger, refunds)
    pid = await payment_of(deps, p)
    contractor = commands.Actor(p.contractor, "contractor")
    await escrow.start_work(commands.EngagementCommand(contractor, p.engagement_id), deps)
    await escrow.complete(
        commands.EngagementCommand(commands.Actor(p.customer, "customer"), p.engagement_id), deps
    )
    refund_id = refunds.at_provider(pid, 100_000)
    assert await apply_refund_event(refunded_event(p, pid), deps) is True
    assert Check.ESCROW_REFUND_OWED in await audit_of(deps, p, pid)
    refunds.fail(pid, refund_id)
    assert await apply_refund_failed_event(failed_event(p, pid), deps) is True
    # As right after the completion: the contractor paid, nothing owed either way.
    assert await everything(ledger, p) == {
        "customer": 0, "contractor": 70_000, "revenue": 30_000, "escrow": 0, "clearing": -100_000,
        "receivable": 0,
    }  # fmt: skip
    assert await audit_of(deps, p, pid) == []


async def test_the_engagements_own_cancellation_refund_failing_is_owed_to_the_customer(
    deps, ledger, refunds
):
    p = await captured(deps, ledger, refunds)
    pid = await payment_of(deps, p)
    await escrow.cancel(cancel_of(p), deps)
    (step,) = await own_steps(deps, p)
    assert step.state is StepState.DONE and step.refund_id
    seen = counted("own")
    refunds.fail(pid, step.refund_id)

    assert await apply_refund_failed_event(failed_event(p, pid), deps) is True
    assert await everything(ledger, p) == OWED_TO_CUSTOMER
    credits = await ledger.credits_of(f"payment:{pid}:refund:{step.refund_id}:failed")
    assert sum(credits.values()) == 100_000
    assert counted("own") == seen + 1
    assert await audit_of(deps, p, pid) == [Check.ESCROW_REFUND_PAYABLE]
    assert await apply_refund_failed_event(failed_event(p, pid, "again"), deps) is False
    assert (await everything(ledger, p))["clearing"] == -100_000


class LostAnswer(FakeCardRefunds):
    """payments refunds, but its answer is lost once (the step does not learn the refund's id)."""

    lose = 1

    async def refund(
        self, payment_id: str, amount_minor: int, request_id: str, reason: str
    ) -> RefundOutcome:
        outcome = await super().refund(payment_id, amount_minor, request_id, reason)
        if self.lose:
            self.lose -= 1
            raise Unavailable("payments did not answer in time")
        return outcome


async def test_a_steps_refund_failing_before_the_step_recorded_it_is_booked_and_reversed(
    sessions, ledger
):
    lost = LostAnswer()
    deps = build(sessions, ledger, lost)
    p = await captured(deps, ledger, lost)
    pid = await payment_of(deps, p)
    await escrow.cancel(cancel_of(p), deps)
    (step,) = await own_steps(deps, p)
    assert step.state is StepState.PENDING and not step.refund_id
    (refund,) = lost.recorded[pid]
    lost.fail(pid, refund.refund_id)

    assert await apply_refund_failed_event(failed_event(p, pid), deps) is True
    (step,) = await own_steps(deps, p)
    # The step books the refund it made (under its id) and never asks again; the reversal
    # books it back: the customer is owed everything.
    assert (step.state, step.refund_id) == (StepState.DONE, refund.refund_id)
    assert len(lost.refunds) == 1
    assert await everything(ledger, p) == OWED_TO_CUSTOMER
    await money_steps.drive(p.engagement_id, StepKind.CANCEL, deps)
    assert len(lost.refunds) == 1 and (await everything(ledger, p))["receivable"] == 100_000


async def test_twin_failure_events_applied_concurrently_reverse_once(deps, ledger, refunds):
    p = await captured(deps, ledger, refunds)
    pid = await payment_of(deps, p)
    refund_id = refunds.at_provider(pid, 100_000)
    assert await apply_refund_event(refunded_event(p, pid), deps) is True
    refunds.fail(pid, refund_id)
    results = await asyncio.gather(
        *(apply_refund_failed_event(failed_event(p, pid, str(n)), deps.fresh()) for n in range(4))
    )
    assert sorted(results) == [False, False, False, True]
    assert len(await reversals(deps, p)) == 1
    assert await everything(ledger, p) == OWED_TO_CUSTOMER


async def test_the_reversal_racing_the_admins_resolution_balances_either_way(deps, ledger, refunds):
    # $300 refunded at the provider while held (frozen, owed), then it fails while the admin
    # resolves `refund`: whichever takes the engagement first, the customer is owed (refunded,
    # or held for them on the receivable) exactly the escrow, and nothing is created or lost.
    for _ in range(4):
        p = await captured(deps, ledger, refunds)
        pid = await payment_of(deps, p)
        refund_id = refunds.at_provider(pid, 30_000)
        assert await apply_refund_event(refunded_event(p, pid), deps) is True
        refunds.fail(pid, refund_id)
        resolved, applied = await asyncio.gather(
            resolve(deps.fresh(), p, "refund"),
            apply_refund_failed_event(failed_event(p, pid), deps.fresh()),
            return_exceptions=True,
        )
        assert resolved is None and applied is True
        for step in await own_steps(deps, p):
            await money_steps.drive(p.engagement_id, step.kind, deps)
        (step,) = await own_steps(deps, p)
        assert step.state is StepState.DONE
        found = await everything(ledger, p)
        assert sum(found.values()) == 0
        # Netted before the failure was booked: $600 refunded, $300 held for the customer; or
        # the failure first: $900 refunded, nothing held.
        assert step.refund_minor + found["receivable"] == 90_000
        assert found["receivable"] == step.netted_minor
        assert found["escrow"] == 0 and found["revenue"] == 10_000
        async with deps.uow as uow:
            dispute = await uow.disputes.for_engagement(p.engagement_id)
        assert dispute is not None and dispute.state is DisputeState.RESOLVED
        payable = [Check.ESCROW_REFUND_PAYABLE] if step.netted_minor else []
        assert await audit_of(deps, p, pid) == payable


async def test_a_wallet_outage_leaves_the_reversal_pending_and_the_event_posts_it(
    sessions, ledger, refunds
):
    deps = build(sessions, ledger, refunds)
    p = await captured(deps, ledger, refunds)
    pid = await payment_of(deps, p)
    refund_id = refunds.at_provider(pid, 100_000)
    assert await apply_refund_event(refunded_event(p, pid), deps) is True
    refunds.fail(pid, refund_id)
    flaky = build(sessions, FlakyLedger(ledger, failures=1), refunds)
    with pytest.raises(HirepayError):
        await apply_refund_failed_event(failed_event(p, pid), flaky)
    (pending,) = await reversals(deps, p)
    assert pending.state is StepState.PENDING and pending.attempts == 1
    assert (await everything(ledger, p))["receivable"] == 0  # decided, not yet posted
    # Applied again (the consumer's cursor did not pass it): posted once.
    assert await apply_refund_failed_event(failed_event(p, pid), flaky) is False
    (done,) = await reversals(deps, p)
    assert done.state is StepState.DONE
    assert await everything(ledger, p) == OWED_TO_CUSTOMER


async def test_a_refund_left_unposted_by_a_wallet_outage_is_posted_with_its_reversal(
    sessions, ledger, refunds
):
    # The refund at the provider was recorded but the wallet was down (its event to be applied
    # again), and it failed meanwhile: the failure's event posts both, the ledger whole.
    deps = build(sessions, ledger, refunds)
    p = await captured(deps, ledger, refunds)
    pid = await payment_of(deps, p)
    refund_id = refunds.at_provider(pid, 100_000)
    with pytest.raises(HirepayError):
        await apply_refund_event(
            refunded_event(p, pid), build(sessions, FlakyLedger(ledger, failures=1), refunds)
        )
    refunds.fail(pid, refund_id)
    assert await apply_refund_failed_event(failed_event(p, pid), deps) is True
    async with deps.uow as uow:
        rows = await uow.escrow_refunds.for_engagement(p.engagement_id)
    assert [r.state for r in rows] == [StepState.DONE, StepState.DONE]
    assert await everything(ledger, p) == OWED_TO_CUSTOMER


async def test_the_marketplace_stream_applies_refund_failures(deps, ledger, refunds):
    p = await captured(deps, ledger, refunds)
    pid = await payment_of(deps, p)
    refund_id = refunds.at_provider(pid, 100_000)
    refunds.fail(pid, refund_id)  # failed before its refund event was applied
    burst = commands.ApplySettlementEvents((refunded_event(p, pid), failed_event(p, pid)))
    applied = [a async for _, a in settlement.apply_marketplace_events(burst, deps)]
    # The refund is no longer a refund (never booked), so nothing to reverse either.
    assert applied == [False, False]
    assert await everything(ledger, p) == {
        "customer": 0, "contractor": 0, "revenue": 10_000, "escrow": 90_000, "clearing": -100_000,
        "receivable": 0,
    }  # fmt: skip
    second = refunds.at_provider(pid, 100_000)
    refunds.fail(pid, second)
    burst = commands.ApplySettlementEvents((failed_event(p, pid, "2"),))
    assert [a async for _, a in settlement.apply_marketplace_events(burst, deps)] == [False]
    third = refunds.at_provider(pid, 100_000)
    burst = commands.ApplySettlementEvents((refunded_event(p, pid, "3"),))
    assert [a async for _, a in settlement.apply_marketplace_events(burst, deps)] == [True]
    refunds.fail(pid, third)
    burst = commands.ApplySettlementEvents((failed_event(p, pid, "3"),))
    assert [a async for _, a in settlement.apply_marketplace_events(burst, deps)] == [True]
    assert (await everything(ledger, p))["receivable"] == 100_000
