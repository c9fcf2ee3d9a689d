"""PayPal's and Razorpay's disputes in the domain's words (ESC-1, API-3): their dispute webhook
events read as disputes (never as a checkout or a payment), and a dispute as its status, its
payment and the money it moved — PayPal's hold when it opens, released when won, kept (less
what PayPal released) when lost, its chargeback fee; Razorpay's deduction when lost (at onset:
test_razorpay_onset_views.py) — under
ids derived from the dispute, so each is booked once whatever the event that brought it."""

from __future__ import annotations

import copy
from typing import Any

from payments.adapters import paypal_disputes, razorpay_disputes
from payments.adapters.paypal_provider import event_from as paypal_event
from payments.adapters.razorpay_provider import event_from as razorpay_event
from payments.domain.disputes import DisputeMoney, DisputeStatus
from payments.domain.provider import EventSubject

# A PayPal dispute as GET /v1/customer/disputes/{id} shows it (trimmed).
PAYPAL_DISPUTE: dict[str, Any] = {
    "dispute_id": "PP-D-27803",
    "create_time": "2026-12-01T10:00:00.000Z",
    "update_time": "2026-12-01T10:00:00.000Z",
    "disputed_transactions": [
        {
            "buyer_transaction_id": "4FB4",
            "seller_transaction_id": "3CAP",
            "transaction_status": "COMPLETED",
            "gross_amount": {"currency_code": "USD", "value": "149.00"},
        }
    ],
    "reason": "MERCHANDISE_OR_SERVICE_NOT_RECEIVED",
    "status": "WAITING_FOR_SELLER_RESPONSE",
    "dispute_amount": {"currency_code": "USD", "value": "149.00"},
    "dispute_life_cycle_stage": "CHARGEBACK",
    "dispute_channel": "EXTERNAL",
    "money_movements": [
        {
            "affected_party": "SELLER",
            "amount": {"currency_code": "USD", "value": "149.00"},
            "type": "DEBIT",
            "reason": "DISPUTE_SETTLEMENT",
        },
        {
            "affected_party": "SELLER",
            "amount": {"currency_code": "USD", "value": "20.00"},
            "type": "DEBIT",
            "reason": "CHARGEBACK_FEE",
        },
    ],
}
HELD = DisputeMoney("PP-D-27803:held", -14_900, 0, "USD")
# A running total: a later view with another amount books the difference.
FEE = DisputeMoney("PP-D-27803:fee:CHARGEBACK_FEE", 0, 2_000, "USD", running=True)

RAZORPAY_DISPUTE: dict[str, Any] = {
    "id": "disp_AHfqOvkldwsbqt",
    "entity": "dispute",
    "payment_id": "pay_EsyWjHrfzb59eR",
    "amount": 10_000,
    "currency": "INR",
    "amount_deducted": 0,
    "reason_code": "chargeback",
    "respond_by": 1590604200,
    "status": "open",
    "phase": "chargeback",
    "created_at": 1590059211,
}


def _paypal(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(PAYPAL_DISPUTE)
    data.update(changes)
    return data


def test_a_paypal_dispute_holds_its_amount_with_its_fee_and_names_the_capture() -> None:
    assert paypal_disputes.capture_of(PAYPAL_DISPUTE) == "3CAP"
    view = paypal_disputes.dispute_from(PAYPAL_DISPUTE, "ORDER-1")
    assert (view.id, view.payment_id, view.amount_minor, view.currency) == (
        "PP-D-27803",
        "ORDER-1",
        14_900,
        "USD",
    )
    assert (view.status, view.reason) == (
        DisputeStatus.NEEDS_RESPONSE,
        "merchandise_or_service_not_received",
    )
    assert view.money == (HELD, FEE)
    review = paypal_disputes.dispute_from(_paypal(status="UNDER_REVIEW"), "ORDER-1")
    assert review.status is DisputeStatus.UNDER_REVIEW


def test_a_paypal_dispute_won_releases_the_hold_and_lost_keeps_it_or_releases_the_rest() -> None:
    won = paypal_disputes.dispute_from(
        _paypal(status="RESOLVED", dispute_outcome={"outcome_code": "RESOLVED_SELLER_FAVOUR"}),
        "ORDER-1",
    )
    released = DisputeMoney("PP-D-27803:released", 14_900, 0, "USD")
    assert (won.status, won.money) == (DisputeStatus.WON, (HELD, released, FEE))
    lost = paypal_disputes.dispute_from(
        _paypal(status="RESOLVED", dispute_outcome={"outcome_code": "RESOLVED_BUYER_FAVOUR"}),
        "ORDER-1",
    )
    assert (lost.status, lost.money) == (DisputeStatus.LOST, (HELD, FEE))
    # The seller accepted a part: the buyer has 49.00 back, the rest of the hold is released.
    part = paypal_disputes.dispute_from(
        _paypal(
            status="RESOLVED",
            dispute_outcome={
                "outcome_code": "ACCEPTED",
                "amount_refunded": {"currency_code": "USD", "value": "49.00"},
            },
        ),
        "ORDER-1",
    )
    assert part.status is DisputeStatus.LOST
    assert part.money == (HELD, DisputeMoney("PP-D-27803:released", 10_000, 0, "USD"), FEE)


def test_a_paypal_inquiry_reads_as_a_warning_and_an_unknown_status_as_open() -> None:
    inquiry = _paypal(dispute_life_cycle_stage="INQUIRY", money_movements=[])
    assert paypal_disputes.dispute_from(inquiry, "").status is (
        DisputeStatus.WARNING_NEEDS_RESPONSE
    )
    closed = dict(inquiry, status="RESOLVED", dispute_outcome={"outcome_code": "CANCELED_BY_BUYER"})
    view = paypal_disputes.dispute_from(closed, "")
    assert view.status is DisputeStatus.WARNING_CLOSED
    assert view.money == (HELD, DisputeMoney("PP-D-27803:released", 14_900, 0, "USD"))
    assert paypal_disputes.dispute_from(_paypal(status="NEW_WORD"), "").status is (
        DisputeStatus.NEEDS_RESPONSE
    )


def test_a_razorpay_dispute_moves_money_only_when_lost() -> None:
    view = razorpay_disputes.dispute_from(RAZORPAY_DISPUTE)
    assert (view.id, view.payment_id, view.amount_minor, view.currency, view.reason) == (
        "disp_AHfqOvkldwsbqt",
        "pay_EsyWjHrfzb59eR",
        10_000,
        "INR",
        "chargeback",
    )
    assert (view.status, view.money) == (DisputeStatus.NEEDS_RESPONSE, ())
    lost = razorpay_disputes.dispute_from(
        dict(RAZORPAY_DISPUTE, status="lost", amount_deducted=10_000)
    )
    assert (lost.status, lost.money) == (
        DisputeStatus.LOST,
        (_growing("disp_AHfqOvkldwsbqt:deducted", -10_000, 0),),
    )
    statuses = {
        ("under_review", "chargeback"): DisputeStatus.UNDER_REVIEW,
        ("won", "chargeback"): DisputeStatus.WON,
        ("closed", "fraud"): DisputeStatus.WARNING_CLOSED,
        ("open", "retrieval"): DisputeStatus.WARNING_NEEDS_RESPONSE,
        ("something_new", "chargeback"): DisputeStatus.NEEDS_RESPONSE,
    }
    for (status, phase), wanted in statuses.items():
        data = dict(RAZORPAY_DISPUTE, status=status, phase=phase)
        assert razorpay_disputes.dispute_from(data).status is wanted, (status, phase)


def _growing(money_id: str, amount: int, fee: int) -> DisputeMoney:
    return DisputeMoney(money_id, amount, fee, "INR", running=True, growing=True)


def test_a_razorpay_fee_deducted_with_the_amount_and_a_partial_reversal_read_exactly() -> None:
    """What `amount_deducted` holds beyond the disputed amount is the fee (deducted at onset with
    it); a reversal gives back disputed money, less than the deduction in part; an escalated
    phase names the network's fee it does not show."""
    onset = dict(RAZORPAY_DISPUTE, deduct_at_onset=True, amount_deducted=10_500)
    assert razorpay_disputes.dispute_from(onset).money == (
        _growing("disp_AHfqOvkldwsbqt:deducted", -10_000, 500),
    )
    won_in_part = dict(onset, status="won", amount_reversed=6_000)
    assert razorpay_disputes.dispute_from(won_in_part).money == (
        _growing("disp_AHfqOvkldwsbqt:deducted", -10_000, 500),
        _growing("disp_AHfqOvkldwsbqt:reversed", 6_000, 0),
    )
    all_back = dict(onset, status="won", amount_reversed=10_500)  # the fee given back too
    assert razorpay_disputes.dispute_from(all_back).money[1] == _growing(
        "disp_AHfqOvkldwsbqt:reversed", 10_000, -500
    )
    assert razorpay_disputes.dispute_from(onset).unbooked == ()
    escalated = razorpay_disputes.dispute_from(dict(onset, phase="pre_arbitration"))
    assert (escalated.unbooked_why, len(escalated.unbooked)) == ("network_fee", 1)
    assert "pre_arbitration fee" in escalated.unbooked[0]


def test_a_growing_total_books_only_more_of_itself() -> None:
    """A later view with more deducted or reversed owes the difference; an older one applied
    late (less than booked) owes nothing, never a booking back."""
    reversed_ = _growing("d:reversed", 6_000, 0)
    assert reversed_.adjustment([]) is reversed_
    assert reversed_.adjustment([(6_000, 0)]) is None
    assert reversed_.adjustment([(8_000, 0)]) is None  # an older view after a newer one
    more = _growing("d:reversed", 10_000, -500)
    assert more.adjustment([(6_000, 0)]) == DisputeMoney("d:reversed:2", 4_000, -500, "INR")
    fee_later = _growing("d:deducted", -10_000, 700)
    assert fee_later.adjustment([(-10_000, 500)]) == DisputeMoney("d:deducted:2", 0, 200, "INR")


def test_dispute_webhooks_read_as_disputes_not_as_checkouts() -> None:
    for kind in sorted(paypal_disputes.DISPUTE_EVENT_TYPES):
        event = paypal_event(
            {
                "id": "WH-1",
                "create_time": "2026-12-01T10:00:00.000Z",
                "resource_type": "dispute",
                "event_type": kind,
                "resource": PAYPAL_DISPUTE,
            }
        )
        assert (event.subject, event.object_id) == (EventSubject.DISPUTE, "PP-D-27803"), kind
    payment = {"id": "pay_EsyWjHrfzb59eR", "order_id": "order_1", "status": "captured"}
    for kind in sorted(razorpay_disputes.DISPUTE_EVENT_TYPES):
        event = razorpay_event(
            "evt_1",
            {
                "entity": "event",
                "event": kind,
                "contains": ["payment", "dispute"],
                "payload": {
                    "payment": {"entity": payment},
                    "dispute": {"entity": RAZORPAY_DISPUTE},
                },
                "created_at": 1590059211,
            },
        )
        assert (event.subject, event.object_id) == (
            EventSubject.DISPUTE,
            "disp_AHfqOvkldwsbqt",
        ), kind
