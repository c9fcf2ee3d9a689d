"""Disputes (`GET /v1/disputes/:id`): a captured payment disputed by the customer's bank, moved
through Razorpay's statuses (open, under_review, action_required's evidence asked again, won,
lost, closed), each step sent as Razorpay's `payment.dispute.*` webhook with the dispute and its
payment. The caller holds the kit lock.

The disputed amount leaves the merchant's balance once (`amount_deducted`): when the dispute is
lost, or, with deduct at onset (`deduct_at_onset`, Razorpay's DAO: the amount taken when the
dispute is raised, before it is decided), when it opens. A dispute deducted at onset and then
won (or closed) is given its deduction back by a credit adjustment, shown as `amount_reversed`
(`amount_deducted` stays what was taken, as Razorpay's own dispute API shows it); one lost keeps
its deduction and takes nothing more.

Razorpay deducts "the disputed amount, along with any applicable fees" (its Chargeback Fees &
Penalties page, Deduct at Onset): a dispute opened with a `fee` deducts it with the amount (at
onset, or when lost), so `amount_deducted` is the amount plus the fee; the fee is kept whatever
the outcome. A reversal gives back the disputed amount deducted unless told less
(`reversed_amount`: a partial reversal, the merchant's contest of part of the amount)."""

from __future__ import annotations

from razorpay_sandbox.errors import refused
from razorpay_sandbox.state import Entity, RazorpayState, razorpay_id

# The admin route's steps: the dispute's status after each, and the event it sends.
STEPS = {
    "under_review": ("under_review", "payment.dispute.under_review"),
    "action_required": ("open", "payment.dispute.action_required"),
    "won": ("won", "payment.dispute.won"),
    "lost": ("lost", "payment.dispute.lost"),
    "closed": ("closed", "payment.dispute.closed"),
}
FINAL = frozenset({"won", "lost", "closed"})
# The outcomes that give an onset deduction back (the merchant keeps the money).
GIVEN_BACK = frozenset({"won", "closed"})


def open_dispute(
    st: RazorpayState,
    payment_id: str,
    amount: int | None,
    reason_code: str,
    phase: str,
    deduct_at_onset: bool = False,
    fee: int = 0,
) -> Entity:
    """The customer's bank disputes a captured payment (all of it unless `amount`); with
    `deduct_at_onset` the disputed amount (and `fee`) is deducted from the balance at once."""
    payment = st.get("payment", payment_id)
    if not payment["captured"]:
        raise refused("Only captured payments can be disputed")
    minor = payment["amount"] if amount is None else amount
    if minor > payment["amount"]:
        raise refused("The dispute amount is greater than the payment amount", "amount")
    now = st.kit.clock.now()
    dispute: Entity = {
        "id": razorpay_id("disp"),
        "entity": "dispute",
        "payment_id": payment_id,
        "amount": minor,
        "currency": payment["currency"],
        "amount_deducted": minor + fee if deduct_at_onset else 0,
        "amount_reversed": 0,
        "deduct_at_onset": deduct_at_onset,
        "reason_code": reason_code,
        "reason_description": "The customer disputes the payment with their bank.",
        "respond_by": now + 7 * 86_400,
        "status": "open",
        "phase": phase,
        "comments": None,
        "created_at": now,
        "evidence": {"amount": minor, "summary": None, "submitted_at": None},
    }
    st.add("dispute", dispute)
    st.facts(dispute["id"])["fee"] = fee  # not a field of Razorpay's dispute entity
    payment["dispute"] = True
    st.emit("payment.dispute.created", payment=payment, dispute=dispute)
    return dispute


def step(st: RazorpayState, dispute_id: str, to: str, reversed_amount: int | None = None) -> Entity:
    """The dispute moves on (`STEPS`): lost, its amount (and fee) is deducted unless it was at
    onset; won or closed after a deduction at onset, the deduction is reversed (the disputed
    amount, or `reversed_amount` of it: a partial reversal; the fee kept)."""
    dispute = st.get("dispute", dispute_id)
    if dispute["status"] in FINAL:
        raise refused(f"The dispute is already {dispute['status']}")
    status, event = STEPS[to]
    if reversed_amount is not None and (
        status not in GIVEN_BACK
        or reversed_amount > min(dispute["amount_deducted"], dispute["amount"])
    ):
        raise refused("The reversal is more than the disputed amount deducted", "reversed_amount")
    dispute["status"] = status
    if status == "lost" and not dispute["amount_deducted"]:
        dispute["amount_deducted"] = dispute["amount"] + st.facts(dispute_id).get("fee", 0)
    elif status in GIVEN_BACK:
        taken = min(dispute["amount_deducted"], dispute["amount"])
        dispute["amount_reversed"] = taken if reversed_amount is None else reversed_amount
    payment = st.get("payment", dispute["payment_id"])
    st.emit(event, payment=payment, dispute=dispute)
    return dispute
