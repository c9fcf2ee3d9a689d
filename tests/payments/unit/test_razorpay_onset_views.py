"""Razorpay's deduct at onset (ESC-1, API-3): a dispute whose amount Razorpay deducts when it is
raised (`deduct_at_onset`, `amount_deducted` from creation) and gives back by a credit adjustment
when it is won or closed (`amount_reversed`) reads as two money movements under ids of their
own — `<dispute>:deducted`, the same id as a deduction when lost, and `<dispute>:reversed` — so
a lost dispute deducted at onset moves nothing more, a won one nets to zero, and the record
never takes back what a newer view recorded, whatever order the views are applied in."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from payments.adapters import razorpay_disputes
from payments.domain.disputes import Dispute, DisputeMoney, DisputeStatus
from tests.payments.unit.test_disputes_paypal_razorpay import RAZORPAY_DISPUTE

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
ONSET: dict[str, Any] = dict(
    RAZORPAY_DISPUTE, deduct_at_onset=True, amount_deducted=10_000, amount_reversed=0
)
# Growing totals (round 16): a later view with more books the difference.
DEDUCTED = DisputeMoney(
    "disp_AHfqOvkldwsbqt:deducted", -10_000, 0, "INR", running=True, growing=True
)
REVERSED = DisputeMoney(
    "disp_AHfqOvkldwsbqt:reversed", 10_000, 0, "INR", running=True, growing=True
)


def test_a_dispute_deducted_at_onset_moves_the_money_when_it_opens() -> None:
    view = razorpay_disputes.dispute_from(ONSET)
    assert (view.status, view.money) == (DisputeStatus.NEEDS_RESPONSE, (DEDUCTED,))
    review = razorpay_disputes.dispute_from(dict(ONSET, status="under_review"))
    assert review.money == (DEDUCTED,)  # the same movement, booked once whichever brought it


def test_won_the_deduction_is_reversed_and_lost_nothing_more_moves() -> None:
    won = razorpay_disputes.dispute_from(dict(ONSET, status="won", amount_reversed=10_000))
    assert (won.status, won.money) == (DisputeStatus.WON, (DEDUCTED, REVERSED))
    closed = razorpay_disputes.dispute_from(dict(ONSET, status="closed", amount_reversed=10_000))
    assert closed.money == (DEDUCTED, REVERSED)
    lost = razorpay_disputes.dispute_from(dict(ONSET, status="lost"))
    assert (lost.status, lost.money) == (DisputeStatus.LOST, (DEDUCTED,))
    # Deducted only when lost (no deduct at onset): the same movement under the same id.
    late = razorpay_disputes.dispute_from(
        dict(RAZORPAY_DISPUTE, status="lost", amount_deducted=10_000)
    )
    assert late.money == (DEDUCTED,)


def test_a_deduction_undone_rather_than_reversed_reads_as_taken_and_given_back() -> None:
    """A won onset dispute shown with `amount_deducted` back at 0 and no `amount_reversed`:
    the amount was taken and given back (both movements: the ledger nets to zero whether or not
    it saw the deduction); never more given back than taken."""
    undone = dict(ONSET, status="won", amount_deducted=0)
    del undone["amount_reversed"]
    assert razorpay_disputes.dispute_from(undone).money == (DEDUCTED, REVERSED)
    # Still open, or not deducted at onset: nothing was taken, nothing is given back.
    assert razorpay_disputes.dispute_from(dict(undone, status="open")).money == ()
    assert razorpay_disputes.dispute_from(dict(undone, deduct_at_onset=False)).money == ()
    too_much = dict(ONSET, status="won", amount_deducted=4_000, amount_reversed=10_000)
    assert razorpay_disputes.dispute_from(too_much).money == (
        replace(DEDUCTED, amount_minor=-4_000),
        replace(REVERSED, amount_minor=4_000),
    )


def test_the_record_ends_the_same_whatever_order_the_views_arrive_in() -> None:
    """The opening, review and decision views of one dispute applied in every order: the
    record ends at the decision's money (an older view never takes back what a newer one
    recorded) and a closed dispute stays closed."""
    opened = razorpay_disputes.dispute_from(ONSET)
    review = razorpay_disputes.dispute_from(dict(ONSET, status="under_review"))
    for outcome, reversed_minor in (("won", 10_000), ("lost", 0)):
        decided = razorpay_disputes.dispute_from(
            dict(ONSET, status=outcome, amount_reversed=reversed_minor)
        )
        for order in itertools.permutations([opened, review, decided]):
            record = Dispute.opened(order[0], "razorpay", "pay-1", NOW)
            for view in order:
                record.observe(view, NOW)
            assert (record.status.value, record.withdrawn_minor, record.reinstated_minor) == (
                outcome,
                10_000,
                reversed_minor,
            ), [v.status for v in order]
