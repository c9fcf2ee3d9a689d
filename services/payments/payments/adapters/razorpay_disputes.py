"""Razorpay's disputes in the domain's words: the dispute webhook events (`payment.dispute.*`)
and a dispute (`GET /v1/disputes/:id`, the SDK's `client.dispute.fetch`) read as a
ProviderDispute.

Razorpay deducts the disputed amount from the merchant's balance when the dispute is lost
(`amount_deducted`, 0 until then): that deduction is the dispute's one money movement, under an
id of its own derived from the dispute (`<dispute>:deducted`), booked once whatever the event
that re-fetched it. Razorpay's "deduct at onset" (a deduction when the dispute opens, given back
if won) is not modelled: a won dispute's entity shows no deduction."""

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


def dispute_from(data: Mapping[str, Any]) -> ProviderDispute:
    """A Razorpay dispute entity (`disp_...`); its payment (`pay_...`) is the domain's."""
    dispute_id = str(data["id"])
    currency = str(data.get("currency") or "").upper()
    deducted = int(data.get("amount_deducted") or 0)
    found = (DisputeMoney(f"{dispute_id}:deducted", -deducted, 0, currency),) if deducted else ()
    return ProviderDispute(
        id=dispute_id,
        payment_id=str(data.get("payment_id") or ""),
        amount_minor=int(data.get("amount") or 0),
        currency=currency,
        status=_status(data),
        reason=str(data.get("reason_code") or ""),
        money=found,
    )
