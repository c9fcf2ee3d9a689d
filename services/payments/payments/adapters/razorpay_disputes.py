"""Razorpay's disputes in the domain's words: the dispute webhook events (`payment.dispute.*`)
and a dispute (`GET /v1/disputes/:id`, the SDK's `client.dispute.fetch`) read as a
ProviderDispute.

Razorpay takes the disputed amount from the merchant's balance once (`amount_deducted`): when
the dispute is lost, or, with deduct at onset (`deduct_at_onset`, Razorpay's DAO), when it is
raised. A dispute deducted at onset and then won (or closed) is given the deduction back by a
credit adjustment (`amount_reversed`). Each is a money movement under an id of its own derived
from the dispute — `<dispute>:deducted` (whenever it was taken: a lost dispute deducted at onset
moves nothing more), `<dispute>:reversed` — booked once whatever the event that re-fetched it.
A view that shows a won or closed onset dispute with `amount_deducted` back at 0 and no
`amount_reversed` (the deduction undone rather than reversed) reads as both movements, the
disputed amount taken and given back: the ledger ends the same whichever views it saw.

Fees and partial reversals, read exactly from the dispute (Razorpay's dispute entity has no fee
field): Razorpay deducts "the disputed amount, along with any applicable fees" (its Chargeback
Fees & Penalties page, Deduct at Onset), so what `amount_deducted` holds beyond the disputed
`amount` is the dispute's fee (never disputed money: no more than the amount is taken back from
the customer's payment), booked into the provider's fees account. A reversal (`amount_reversed`)
gives back the disputed money first, and only what it holds beyond the amount deducted is a fee
given back; one less than the deduction (a partial reversal, the merchant having contested part
of the amount) leaves the rest with the customer. Both are running totals that only grow
(DisputeMoney.growing): a later view with more deducted or reversed books the difference under
an id of its own, an older view applied late books nothing. The fees card networks levy when a
dispute escalates (pre-arbitration, arbitration), which Razorpay passes on but its dispute does
not show, are not booked: named (ProviderDispute.unbooked) and counted once when it closes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from payments.domain.disputes import DisputeMoney, DisputeStatus, ProviderDispute

# Every change of a dispute Razorpay reports (https://razorpay.com/docs/webhooks/disputes):
# each is applied from the dispute re-fetched, so any of them settles it.
DISPUTE_EVENT_TYPES = frozenset(
    {
        "payment.dispute.created",
        "payment.dispute.won",
        "payment.dispute.lost",
        "payment.dispute.closed",
        "payment.dispute.under_review",
        "payment.dispute.action_required",
    }
)
# Phases that are an inquiry, not a chargeback (a retrieval request, a bank's fraud alert).
_INQUIRIES = frozenset({"retrieval", "fraud"})
_CLOSED = {
    "won": DisputeStatus.WON,
    "lost": DisputeStatus.LOST,
    "closed": DisputeStatus.WARNING_CLOSED,
}
# The outcomes that give a deduction at onset back (the merchant keeps the money).
_GIVEN_BACK = frozenset({"won", "closed"})


def _status(data: Mapping[str, Any]) -> DisputeStatus:
    """Razorpay's status and phase as the domain's status (an unknown status reads as one the
    merchant must answer: never closed by a word Hirepay does not know)."""
    status = str(data.get("status") or "")
    if status in _CLOSED:
        return _CLOSED[status]
    inquiry = str(data.get("phase") or "") in _INQUIRIES
    if status == "under_review":
        return DisputeStatus.WARNING_UNDER_REVIEW if inquiry else DisputeStatus.UNDER_REVIEW
    return DisputeStatus.WARNING_NEEDS_RESPONSE if inquiry else DisputeStatus.NEEDS_RESPONSE


# Phases in which the card network levies a fee of its own that the dispute does not show.
_NETWORK_FEE_PHASES = frozenset({"pre_arbitration", "arbitration"})


def _money(data: Mapping[str, Any], dispute_id: str, currency: str) -> tuple[DisputeMoney, ...]:
    """The dispute's deduction and its reversal, each a growing total: the disputed money (never
    more than `amount`, never more given back than taken) and, beyond it, the fee."""
    amount = int(data.get("amount") or 0)
    deducted = int(data.get("amount_deducted") or 0)
    given_back = int(data.get("amount_reversed") or 0)
    if (
        not deducted
        and data.get("deduct_at_onset") is True
        and str(data.get("status") or "") in _GIVEN_BACK
        and "amount_reversed" not in data
    ):
        # Deducted at onset, and the deduction undone with the outcome rather than shown as
        # reversed: the amount was taken and given back (booked as both, net zero).
        deducted = given_back = amount
    taken = min(deducted, amount)
    money = []
    if deducted:
        money.append(
            DisputeMoney(
                f"{dispute_id}:deducted",
                -taken,
                deducted - taken,
                currency,
                running=True,
                growing=True,
            )
        )
    if given_back := min(given_back, deducted):
        back = min(given_back, taken)
        money.append(
            DisputeMoney(
                f"{dispute_id}:reversed",
                back,
                -(given_back - back),
                currency,
                running=True,
                growing=True,
            )
        )
    return tuple(money)


def _unbooked(data: Mapping[str, Any]) -> tuple[str, ...]:
    """The network's escalation fee, passed on by Razorpay but not on its dispute."""
    phase = str(data.get("phase") or "")
    if phase not in _NETWORK_FEE_PHASES:
        return ()
    return (f"the card network's {phase} fee Razorpay passes on is not on the dispute: not booked",)


def dispute_from(data: Mapping[str, Any]) -> ProviderDispute:
    """A Razorpay dispute entity (`disp_...`); its payment (`pay_...`) is the domain's."""
    dispute_id = str(data["id"])
    currency = str(data.get("currency") or "").upper()
    return ProviderDispute(
        id=dispute_id,
        payment_id=str(data.get("payment_id") or ""),
        amount_minor=int(data.get("amount") or 0),
        currency=currency,
        status=_status(data),
        reason=str(data.get("reason_code") or ""),
        money=_money(data, dispute_id, currency),
        unbooked=_unbooked(data),
        unbooked_why="network_fee",
    )
