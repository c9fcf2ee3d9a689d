"""Disputes (`GET /v1/disputes/:id`): a captured payment disputed by the customer's bank, moved
through Razorpay's statuses (open, under_review, action_required's evidence asked again, won,
lost, closed), each step sent as Razorpay's `payment.dispute.*` webhook with the dispute and its
payment. The caller holds the kit lock.

The disputed amount leaves the merchant's balance once (`amount_deducted`): when the dispute is
lost, or, with deduct at onset (`deduct_at_onset`, Razorpay's DAO: the amount taken when the
dispute is raised, before it is decided), when it opens. A dispute deducted at onset and then
won (or closed) is given its deduction back by a credit adjustment, shown as `amount_reversed`
(`amount_deducted` stays what was taken, as Razorpay's own dispute API shows it); one lost keeps
its deduction and takes nothing more."""

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
) -> Entity:
    """The customer's bank disputes a captured payment (all of it unless `amount`); with
    `deduct_at_onset` the disputed amount is deducted from the balance at once."""
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
        "amount_deducted": minor if deduct_at_onset else 0,
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
    payment["dispute"] = True
    st.emit("payment.dispute.created", payment=payment, dispute=dispute)
    return dispute


def step(st: RazorpayState, dispute_id: str, to: str) -> Entity:
    """The dispute moves on (`STEPS`): lost, its amount is deducted unless it was at onset;
    won or closed after a deduction at onset, the deduction is reversed."""
    dispute = st.get("dispute", dispute_id)
    if dispute["status"] in FINAL:
        raise refused(f"The dispute is already {dispute['status']}")
    status, event = STEPS[to]
    dispute["status"] = status
    if status == "lost" and not dispute["amount_deducted"]:
        dispute["amount_deducted"] = dispute["amount"]
    elif status in GIVEN_BACK:
        dispute["amount_reversed"] = dispute["amount_deducted"]
    payment = st.get("payment", dispute["payment_id"])
    st.emit(event, payment=payment, dispute=dispute)
    return dispute
