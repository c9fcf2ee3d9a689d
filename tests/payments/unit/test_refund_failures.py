"""Refunds that succeeded and then failed at the provider (Stripe: succeeded -> failed, the card
closed since; ESC-1 every cent, API-4, PAY-15, OPS-1), against the in-memory fakes: Hirepay's own
refunds and those made at the provider alike go FAILED, the payment's refunded amount and state
are given back, the refund's booking is reversed by a balanced booking of its own (balances
asserted on the fake ledger) with the coins it took back, and a twin event reverses nothing
twice."""

from __future__ import annotations

import pytest

from payments.adapters.stripe_provider import refund_from
from payments.domain import commands, errors
from payments.domain.events import EventType
from payments.domain.model import PaymentState
from payments.domain.provider import OutcomeUnknown, RefundState
from payments.domain.refunds import CoinsState, RefundStatus
from payments.service_layer import metrics
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import credits, refund
from payments.service_layer.handlers.poller import poll_due
from tests.payments.unit.test_provider_refunds import (
    CLEARING,
    COIN_PURCHASE,
    FEE,
    OWNER,
    PLATFORM,
    _captured,
    _deliver,
    _intent,
    _moved,
    _provider,
    _state,
    _wallet,
)
from tests.payments.unit.test_provider_refunds import deps as provider_deps
from tests.support.payments_fakes import Clock


@pytest.fixture
def deps() -> Deps:
    """The provider refunds tests' fakes: a webhook-delivering provider and a fake wallet."""
    return provider_deps.__wrapped__()


REASON = "expired_or_canceled_card"


def _failed_after_success(provider: str = "stripe", subsystem: str = "jobs") -> float:
    return metrics.REFUNDS_FAILED_AFTER_SUCCESS.labels(provider, subsystem)._value.get()


def _outbox(deps: Deps, payment_id: str) -> list[EventType]:
    return [
        e.type
        for e in deps.uow.committed.outbox  # type: ignore[attr-defined]
        if e.payment and e.payment.id == payment_id
    ]


async def test_hirepays_own_refund_failing_after_success_is_reversed(deps: Deps) -> None:
    pid = await _captured(deps, "f1")
    pi = await _intent(deps, pid)
    done = await refund(commands.Refund("r-1", pid, 0), deps)
    await credits.settle_due_grants(deps)
    assert _moved(deps) == {}  # refunded in full: revenue back to clearing
    events_before = _outbox(deps, pid)
    seen = _failed_after_success()
    _provider(deps).fail_refund(pi, done.refund.provider_refund_id, REASON)

    outcome = await _deliver(deps, "evt_f1", pi, "refund.failed")

    assert outcome.applied and not outcome.duplicate
    p, [ref], audit = await _state(deps, pid)
    assert (p.state, p.refunded_minor, p.refundable_minor) == (PaymentState.CAPTURED, 0, FEE)
    assert ref.status is RefundStatus.FAILED
    assert ref.failure_message == f"failed_after_success: {REASON}"
    await credits.settle_due_grants(deps)
    # The refund's booking stays; its reversal books the fee back as revenue.
    assert _moved(deps) == {CLEARING: -FEE, PLATFORM: FEE}
    async with deps.uow as uow:
        kinds = sorted(str(g.kind) for g in await uow.credit_grants.for_payment(pid))
    assert kinds == ["capture", "refund", "refund_failed"]
    [entry] = [e for e in audit if "failed at stripe since" in e.reason]
    assert entry.actor == "provider" and entry.details["from"] == "REFUNDED"
    assert entry.details["to"] == "CAPTURED"
    assert entry.details["transfer_id"] == f"payment:{pid}:refund:{ref.id}:failed"
    assert _failed_after_success() == seen + 1
    # No settlement event: the posting ended by the refund stays ended (operators alerted).
    assert _outbox(deps, pid) == events_before

    # Its twin (refund.updated) and a redelivery reverse nothing twice.
    twin = await _deliver(deps, "evt_f2", pi, "refund.updated")
    again = await _deliver(deps, "evt_f1", pi, "refund.failed")
    assert (twin.applied, twin.duplicate, again.duplicate) == (False, False, True)
    await credits.settle_due_grants(deps)
    assert _moved(deps) == {CLEARING: -FEE, PLATFORM: FEE}
    assert _failed_after_success() == seen + 1

    # Refundable again: Hirepay refunds it anew (another request) and books it once.
    await refund(commands.Refund("r-2", pid, 0), deps)
    await credits.settle_due_grants(deps)
    assert _moved(deps) == {}
    p, refunds, _ = await _state(deps, pid)
    assert p.state is PaymentState.REFUNDED
    assert sorted(r.status for r in refunds) == [RefundStatus.FAILED, RefundStatus.SUCCEEDED]


async def test_a_partial_refund_made_at_the_provider_failing_leaves_the_others(
    deps: Deps,
) -> None:
    pid = await _captured(deps, "f2")
    pi = await _intent(deps, pid)
    first = _provider(deps).refund_outside(pi, 4_000)
    _provider(deps).refund_outside(pi, 900)
    await _deliver(deps, "evt_1", pi)
    p, _, _ = await _state(deps, pid)
    assert (p.state, p.refunded_minor) == (PaymentState.PARTIALLY_REFUNDED, 4_900)
    _provider(deps).fail_refund(pi, first, "lost_or_stolen_card")
    assert (await _deliver(deps, "evt_2", pi, "refund.updated")).applied
    p, refunds, _ = await _state(deps, pid)
    assert (p.state, p.refunded_minor) == (PaymentState.PARTIALLY_REFUNDED, 900)
    assert {r.provider_refund_id: r.status for r in refunds}[first] is RefundStatus.FAILED
    await credits.settle_due_grants(deps)
    assert _moved(deps) == {CLEARING: -(FEE - 900), PLATFORM: FEE - 900}


async def test_a_coin_purchase_refund_failing_gives_its_coins_back(deps: Deps) -> None:
    pid = await _captured(deps, "f3", dict(COIN_PURCHASE))
    pi = await _intent(deps, pid)
    re_id = _provider(deps).refund_outside(pi, 4_900)
    await _deliver(deps, "evt_1", pi)
    _, [ref], _ = await _state(deps, pid)
    assert ref.coins_state is CoinsState.TAKEN
    await credits.settle_due_grants(deps)
    assert _wallet(deps).balances[(OWNER, "COIN")] == 10_000
    _provider(deps).fail_refund(pi, re_id, REASON)
    await _deliver(deps, "evt_2", pi, "refund.failed")
    p, [ref], _ = await _state(deps, pid)
    assert (p.state, ref.status, ref.coins_state) == (
        PaymentState.CAPTURED,
        RefundStatus.FAILED,
        CoinsState.RETURNED,
    )
    await credits.settle_due_grants(deps)
    # As right after the purchase: the cash backs the coins, the coins are the buyer's again.
    assert _moved(deps) == {
        CLEARING: -FEE,
        PLATFORM: FEE,
        (OWNER, "COIN"): FEE,
        ("platform", "COIN"): -FEE,
    }


async def test_coins_recorded_short_are_not_given_back(deps: Deps) -> None:
    """The refund could not take the coins back (spent): nothing to give back when it fails,
    and no shortfall is left to recover."""
    pid = await _captured(deps, "f4", dict(COIN_PURCHASE))
    _wallet(deps).spend(OWNER, "COIN", 10_000)
    pi = await _intent(deps, pid)
    re_id = _provider(deps).refund_outside(pi, FEE)
    await _deliver(deps, "evt_1", pi)
    _, [ref], _ = await _state(deps, pid)
    assert ref.coins_state is CoinsState.SHORT
    _provider(deps).fail_refund(pi, re_id, REASON)
    await _deliver(deps, "evt_2", pi, "refund.failed")
    p, [ref], audit = await _state(deps, pid)
    assert (p.state, ref.coins_state) == (PaymentState.CAPTURED, CoinsState.RETURNED)
    [entry] = [e for e in audit if "failed at stripe since" in e.reason]
    assert entry.details["coins_given_back"] == "0"
    await credits.settle_due_grants(deps)
    assert _wallet(deps).balances[(OWNER, "COIN")] == 4_900  # what the buyer had left
    assert _moved(deps) == {  # the 10,000 coins spent left the fake ledger
        CLEARING: -FEE,
        PLATFORM: FEE,
        (OWNER, "COIN"): 4_900,
        ("platform", "COIN"): -FEE,
    }


def test_stripes_failed_refund_is_read_with_its_failure_reason() -> None:
    got = refund_from(
        {
            "id": "re_1",
            "status": "failed",
            "amount": 900,
            "failure_reason": "expired_or_canceled_card",
            "metadata": {"hirepay_refund_id": "rfd_1"},
        }
    )
    assert (got.state, got.failure_reason, got.metadata) == (
        RefundState.FAILED,
        "expired_or_canceled_card",
        {"hirepay_refund_id": "rfd_1"},
    )
    assert refund_from({"id": "re_2", "status": "succeeded", "amount": 1}).failure_reason == ""


async def test_a_failure_before_hirepays_refund_answer_is_recorded_waits_for_it(
    deps: Deps,
) -> None:
    """The refund's answer was lost (PENDING) and Stripe reports it failed before the poller
    recorded it: the event is refused (delivered again), the poller's replay records what Stripe
    first answered (succeeded), and the redelivered failure then reverses it."""
    pid = await _captured(deps, "f5")
    pi = await _intent(deps, pid)
    _provider(deps).script = [("after", OutcomeUnknown("lost", timeout=True))]
    with pytest.raises(errors.PaymentTimeout):
        await refund(commands.Refund("r-1", pid, 0), deps)
    [made] = _provider(deps).refunds[pi]
    _provider(deps).fail_refund(pi, made.id, REASON)
    with pytest.raises(errors.EventNotApplicableYet):
        await _deliver(deps, "evt_f", pi, "refund.failed")
    assert "evt_f" not in deps.uow.committed.events  # type: ignore[attr-defined]
    clock = deps.clock
    assert isinstance(clock, Clock)
    clock.advance(120)
    await poll_due(deps)
    _, [ref], _ = await _state(deps, pid)
    assert ref.status is RefundStatus.SUCCEEDED  # the replay's answer
    assert (await _deliver(deps, "evt_f", pi, "refund.failed")).applied  # Stripe's retry
    p, [ref], _ = await _state(deps, pid)
    assert (p.state, p.refunded_minor, ref.status) == (
        PaymentState.CAPTURED,
        0,
        RefundStatus.FAILED,
    )
    await credits.settle_due_grants(deps)
    assert _moved(deps) == {CLEARING: -FEE, PLATFORM: FEE}


# An accepted card offer's payment as jobs authorizes it (jobs.adapters.offer_funds).
OFFER = {
    "subsystem": "marketplace",
    "purpose": "marketplace",
    "type": "marketplace_offer",
    "offer_id": "offer_1",
}


@pytest.mark.parametrize("made_by", ["hirepay", "provider"])
async def test_offer_moneys_refund_failing_is_told_to_jobs_once(deps: Deps, made_by: str) -> None:
    """Offer money is jobs' to book (payments books neither the refund nor its reversal): its
    refund failing after success is published once, `payment.refund_failed` on the marketplace
    stream, in the transaction that reverses it; twins and redeliveries publish nothing more."""
    pid = await _captured(deps, f"o-{made_by}", dict(OFFER))
    pi = await _intent(deps, pid)
    if made_by == "hirepay":  # an engagement's own refund (a cancellation)
        done = await refund(commands.Refund("engagement:eng_1:cancel", pid, 0), deps)
        re_id = done.refund.provider_refund_id
    else:  # made at Stripe's dashboard
        re_id = _provider(deps).refund_outside(pi, FEE)
        await _deliver(deps, "evt_1", pi)
    before = _outbox(deps, pid)
    _provider(deps).fail_refund(pi, re_id, REASON)

    assert (await _deliver(deps, "evt_f1", pi, "refund.failed")).applied
    await _deliver(deps, "evt_f2", pi, "refund.updated")  # its twin
    await _deliver(deps, "evt_f1", pi, "refund.failed")  # a redelivery

    p, [ref], _ = await _state(deps, pid)
    assert (p.state, p.refundable_minor, ref.status) == (
        PaymentState.CAPTURED,
        FEE,
        RefundStatus.FAILED,
    )
    assert _outbox(deps, pid) == [*before, EventType.PAYMENT_REFUND_FAILED]
    [told] = [
        e
        for e in deps.uow.committed.outbox  # type: ignore[attr-defined]
        if e.type is EventType.PAYMENT_REFUND_FAILED
    ]
    assert told.subsystem == "marketplace" and told.payment.metadata["offer_id"] == "offer_1"
    await credits.settle_due_grants(deps)
    assert _moved(deps) == {}  # nothing booked by payments: jobs books offer money
    async with deps.uow as uow:
        kinds = sorted(str(g.kind) for g in await uow.credit_grants.for_payment(pid))
    assert kinds == []
