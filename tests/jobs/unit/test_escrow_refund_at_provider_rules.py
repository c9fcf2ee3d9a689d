"""The pure rules of offer money refunded at the provider (ESC-1, ESC-8): which refunds are jobs'
own, and the legs that book one — every transfer sums to what the provider paid back into
provider clearing, unwinding the escrow while it holds the money, owed otherwise."""

from __future__ import annotations

from jobs.domain.escrow import (
    AccountRef,
    AtProviderOutcome,
    EscrowRefund,
    Leg,
    PaymentRefund,
    receivable,
    refund_at_provider,
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
