"""The pure rules of offer money refunds that failed after they succeeded (ESC-1, ESC-8): which
of the refunds jobs booked are to be reversed (one made at the provider, or a money step's own,
found by its refund id or, before the step recorded it, by its request id), and the reversal's
one leg, clearing -> the engagement's receivable, which cancels what the refund left owed or
holds what is owed to the customer; a refund made at the provider after a failed one is judged
on what was really refunded."""

from __future__ import annotations

from dataclasses import replace

from jobs.domain.escrow import (
    AccountRef,
    AtProviderOutcome,
    CancelPolicy,
    Leg,
    PaymentRefund,
    StepKind,
    StepState,
    cancel_payout,
    failed_bookings,
    plan_step,
    receivable,
    refund_at_provider,
    refund_reversal,
    still_owed,
)
from jobs.domain.marketplace import EngagementState
from tests.jobs.unit.test_escrow_refund_at_provider_rules import CLEARING, at_provider, card
from tests.support.escrow_support import UNIT_NOW

RECEIVABLE = receivable("eng_1", "USD")


def failed(refund: PaymentRefund) -> PaymentRefund:
    return replace(refund, status="FAILED")


def test_the_reversal_moves_what_clearing_received_to_the_receivable() -> None:
    engagement = card(EngagementState.CANCELLED)
    reversal = refund_reversal(engagement, failed(at_provider(30_000)), "stripe", UNIT_NOW)
    assert reversal.outcome is AtProviderOutcome.REVERSED
    assert reversal.legs == (Leg(CLEARING, RECEIVABLE, 30_000),)
    assert reversal.refund_id == "rfd_1:failed"
    # payments' name for a reversal's booking: the ledger auditor and operators find it.
    assert reversal.transfer_id == "payment:pay_1:refund:rfd_1:failed"
    assert reversal.owed_minor == -30_000


def test_only_failed_refunds_jobs_booked_and_not_reversed_yet_are_found() -> None:
    engagement = card(EngagementState.IN_PROGRESS)
    made = at_provider(30_000)
    booked = [refund_at_provider(engagement, made, "stripe", [], UNIT_NOW)]
    assert failed_bookings([made], booked, []) == []  # still succeeded
    assert failed_bookings([failed(made)], booked, []) == [(failed(made), None)]
    # One that failed before jobs booked it moved nothing here.
    assert failed_bookings([failed(at_provider(5, "rfd_9"))], booked, []) == []
    reversed_ = [*booked, refund_reversal(engagement, failed(made), "stripe", UNIT_NOW)]
    assert failed_bookings([failed(made)], reversed_, []) == []


def test_a_steps_own_refund_is_found_by_its_id_or_before_it_recorded_it_by_its_request() -> None:
    engagement = card(EngagementState.ASSIGNED)
    step = plan_step(
        engagement, StepKind.CANCEL, cancel_payout(engagement, CancelPolicy()), UNIT_NOW, "stripe"
    )
    own = PaymentRefund("rfd_own", step.request_id, 100_000, "FAILED")
    assert failed_bookings([own], [], [step]) == [(own, step)]  # its id not recorded yet
    step.refunded("rfd_own", UNIT_NOW)
    step.done(UNIT_NOW)
    assert failed_bookings([own], [], [step]) == [(own, step)]
    other = PaymentRefund("rfd_x", "engagement:eng_1:resolve", 5, "FAILED")
    assert failed_bookings([other], [], [step]) == []


def test_what_the_receivable_holds_after_each_kind_of_reversal() -> None:
    held = card(EngagementState.IN_PROGRESS)
    # Frozen (in part while held): the debt it left is gone, nothing owed either way.
    part = at_provider(30_000)
    frozen = refund_at_provider(held, part, "stripe", [], UNIT_NOW)
    undone = refund_reversal(held, failed(part), "stripe", UNIT_NOW)
    assert still_owed([frozen, undone], []) == 0
    # Unwound (in full while held): the whole amount is owed to the customer.
    full = at_provider(100_000, "rfd_2")
    unwound = refund_at_provider(held, full, "stripe", [], UNIT_NOW)
    back = refund_reversal(card(EngagementState.CANCELLED), failed(full), "stripe", UNIT_NOW)
    assert still_owed([unwound, back], []) == -100_000
    # The engagement's own refund: what it asked of the provider is owed to the customer.
    ended = card(EngagementState.CANCELLED)
    step = plan_step(ended, StepKind.CANCEL, cancel_payout(held, CancelPolicy()), UNIT_NOW, "x")
    step.state = StepState.DONE
    mine = PaymentRefund("rfd_3", step.request_id, 90_000, "FAILED")
    assert still_owed([refund_reversal(ended, mine, "stripe", UNIT_NOW)], [step]) == -90_000


def test_a_refund_at_the_provider_after_a_failed_one_counts_only_what_was_refunded() -> None:
    held = card(EngagementState.DISPUTED)
    part = at_provider(30_000)
    frozen = refund_at_provider(held, part, "stripe", [], UNIT_NOW)
    undone = refund_reversal(held, failed(part), "stripe", UNIT_NOW)
    # 70,000 more is not "the rest": the 30,000 never reached the customer.
    more = refund_at_provider(
        held, at_provider(70_000, "rfd_2"), "stripe", [frozen, undone], UNIT_NOW
    )
    assert more.outcome is AtProviderOutcome.FROZEN
    # The full amount refunded again: unwound, and nothing left owed to settle.
    full = refund_at_provider(
        held, at_provider(100_000, "rfd_3"), "stripe", [frozen, undone], UNIT_NOW
    )
    assert full.outcome is AtProviderOutcome.UNWOUND
    assert still_owed([frozen, undone, full], []) == 0
    assert (
        sum(leg.amount_minor for leg in full.legs if leg.target == CLEARING)
        - sum(leg.amount_minor for leg in full.legs if leg.source == CLEARING)
        == 100_000
    )
    assert AccountRef.escrow("eng_1", "USD") in {leg.source for leg in full.legs}
