"""The pure rules of offer money refunded at the provider (ESC-1, ESC-8): which refunds are jobs'
own, and the legs that book one — every transfer sums to what the provider paid back into
provider clearing, unwinding the escrow while it holds the money, owed otherwise; and the
engagement's own card refund netted against what they left owed (never refunded twice)."""

from __future__ import annotations

from jobs.domain.escrow import (
    AccountRef,
    AtProviderOutcome,
    CancelPolicy,
    EscrowRefund,
    Leg,
    MoneyStep,
    PaymentRefund,
    StepKind,
    cancel_payout,
    plan_step,
    receivable,
    refund_at_provider,
    still_owed,
)
from jobs.domain.marketplace import EngagementState, FundingSource
from tests.support.escrow_support import UNIT_NOW, unit_engagement

CLEARING = AccountRef.clearing("stripe", "USD")


def card(state: EngagementState) -> object:
    return unit_engagement(100_000, state, FundingSource.CARD, "USD")


def at_provider(amount: int, refund_id: str = "rfd_1") -> PaymentRefund:
    return PaymentRefund(refund_id, f"provider:re_{refund_id}", amount, "SUCCEEDED")


def into_clearing(booking: EscrowRefund) -> int:
    return sum(leg.amount_minor for leg in booking.legs if leg.target == CLEARING) - sum(
        leg.amount_minor for leg in booking.legs if leg.source == CLEARING
    )


def test_only_refunds_jobs_did_not_ask_for_are_outside_the_escrow() -> None:
    assert at_provider(5).outside_escrow
    assert not PaymentRefund("rfd_2", "engagement:eng_1:cancel", 5, "SUCCEEDED").outside_escrow
    assert not PaymentRefund("rfd_3", "provider:re_3", 5, "PENDING").outside_escrow


def test_a_full_refund_while_held_unwinds_escrow_and_fee_to_clearing() -> None:
    for state in (EngagementState.ASSIGNED, EngagementState.IN_PROGRESS, EngagementState.DISPUTED):
        booking = refund_at_provider(card(state), at_provider(100_000), "stripe", [], UNIT_NOW)
        assert booking.outcome is AtProviderOutcome.UNWOUND
        assert booking.legs == (
            Leg(AccountRef.escrow("eng_1", "USD"), CLEARING, 90_000),
            Leg(AccountRef.revenue("USD"), CLEARING, 10_000),
        )
        assert booking.transfer_id == "payment:pay_1:refund:rfd_1"
        assert booking.owed_minor == 0


def test_a_partial_refund_while_held_is_owed_and_frozen() -> None:
    booking = refund_at_provider(
        card(EngagementState.IN_PROGRESS), at_provider(30_000), "stripe", [], UNIT_NOW
    )
    assert booking.outcome is AtProviderOutcome.FROZEN
    assert booking.legs == (Leg(receivable("eng_1", "USD"), CLEARING, 30_000),)
    assert booking.owed_minor == 30_000


def test_the_rest_refunded_unwinds_and_settles_what_the_first_left_owed() -> None:
    engagement = card(EngagementState.DISPUTED)
    first = refund_at_provider(engagement, at_provider(30_000), "stripe", [], UNIT_NOW)
    rest = refund_at_provider(engagement, at_provider(70_000, "rfd_2"), "stripe", [first], UNIT_NOW)
    assert rest.outcome is AtProviderOutcome.UNWOUND
    assert into_clearing(rest) == 70_000  # exactly what the provider paid back this time
    assert first.owed_minor + rest.owed_minor == 0  # the debt settled


def test_after_release_every_refund_is_owed() -> None:
    for state in (EngagementState.COMPLETED, EngagementState.CANCELLED):
        booking = refund_at_provider(card(state), at_provider(100_000), "stripe", [], UNIT_NOW)
        assert booking.outcome is AtProviderOutcome.OWED
        assert into_clearing(booking) == 100_000 == booking.owed_minor


def test_no_zero_legs_when_the_fee_rounds_to_nothing() -> None:
    one_cent = unit_engagement(1, EngagementState.ASSIGNED, FundingSource.CARD, "USD")
    booking = refund_at_provider(one_cent, at_provider(1), "stripe", [], UNIT_NOW)
    assert booking.legs == (Leg(AccountRef.escrow("eng_1", "USD"), CLEARING, 1),)


# --------------------------------------------------------------------------- the engagement's own
# refund netted against what refunds made at the provider left owed


def cancel_step(state: EngagementState = EngagementState.ASSIGNED) -> MoneyStep:
    """A card cancellation before work started: escrow $900 and the fee $100 back."""
    engagement = card(state)
    return plan_step(
        engagement,
        StepKind.CANCEL,
        cancel_payout(engagement, CancelPolicy()),
        UNIT_NOW,
        "stripe",
    )


def owed(amount: int, refund_id: str = "rfd_1") -> EscrowRefund:
    return refund_at_provider(
        card(EngagementState.CANCELLED), at_provider(amount, refund_id), "stripe", [], UNIT_NOW
    )


def test_a_step_nets_what_is_owed_escrow_first_and_asks_only_the_rest() -> None:
    step = cancel_step()
    assert step.request_id == "engagement:eng_1:cancel" and step.refund_minor == 100_000
    assert step.net([owed(30_000)], UNIT_NOW) is True
    escrow, revenue = AccountRef.escrow("eng_1", "USD"), AccountRef.revenue("USD")
    debt = receivable("eng_1", "USD")
    assert step.legs == (
        Leg(escrow, debt, 30_000),
        Leg(escrow, CLEARING, 60_000),
        Leg(revenue, CLEARING, 10_000),
    )
    assert (step.netted_minor, step.refund_minor) == (30_000, 70_000)
    # The netted part is the step's own transfer; the rest the refund's booking, to clearing.
    assert step.ledger_legs == (Leg(escrow, debt, 30_000),)
    assert sum(leg.amount_minor for leg in step.refund_legs) == step.refund_minor
    # Another amount, another request id: payments refuses one key with two amounts.
    assert step.request_id == "engagement:eng_1:cancel:net:30000"
    # Netted again with the same refunds: nothing more; a later one is netted on top.
    assert step.net([owed(30_000)], UNIT_NOW) is False
    assert step.net([owed(30_000), owed(70_000, "rfd_2")], UNIT_NOW) is True
    assert (step.netted_minor, step.refund_minor, step.refund_legs) == (100_000, 0, ())
    assert step.legs == (Leg(escrow, debt, 90_000), Leg(revenue, debt, 10_000))
    assert not step.needs_refund


def test_a_step_nets_no_more_than_it_refunds_nor_once_its_refund_exists() -> None:
    step = cancel_step(EngagementState.IN_PROGRESS)  # after the start: the fee kept
    assert step.refund_minor == 90_000
    assert step.net([owed(100_000)], UNIT_NOW) is True
    assert (step.netted_minor, step.refund_minor) == (90_000, 0)
    # What stays owed once the step is posted: $100 (the fee the customer got back as well).
    assert still_owed([owed(100_000)], [step]) == 100_000  # not posted yet
    step.done(UNIT_NOW)
    assert still_owed([owed(100_000)], [step]) == 10_000
    refunded = cancel_step()
    refunded.refunded("rfd_own", UNIT_NOW)
    assert refunded.net([owed(30_000)], UNIT_NOW) is False  # the provider refunded it already
    assert cancel_step().net([], UNIT_NOW) is False
