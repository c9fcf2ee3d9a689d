"""Refunds of captured payments: partial and repeated, never beyond what was captured.

A refund can fail after it succeeded, as at Stripe (the card closed since): a charge paid with
the refund-failure test card (4000 0000 0000 5126, `pm_card_refundFail`) has every refund
created `succeeded` and turned `failed` (`failure_reason` expired_or_canceled_card) after
`refund_fail_after` seconds; the admin API fails any succeeded refund (admin.py). The failed
refund's amount is the charge's to refund again (`amount_refunded` goes down), and
`refund.failed`, `refund.updated` and `charge.refund.updated` are sent."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stripe_sandbox import ids
from stripe_sandbox.errors import StripeAPIError, invalid_request
from stripe_sandbox.params import Params, merge_metadata
from stripe_sandbox.resources import payment_methods
from stripe_sandbox.store import Context, StripeObject

if TYPE_CHECKING:
    from stripe_sandbox.runtime import Sandbox

REASONS = ("duplicate", "fraudulent", "requested_by_customer")
# Stripe's refund failure reasons (https://docs.stripe.com/api/refunds/object).
FAILURE_REASONS = (
    "charge_for_pending_refund_disputed",
    "declined",
    "expired_or_canceled_card",
    "insufficient_funds",
    "lost_or_stolen_card",
    "merchant_request",
    "unknown",
)


def _not_refundable(message: str) -> StripeAPIError:
    return invalid_request(message, code="charge_not_refundable")


def _charge_to_refund(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    intent_id = p.text("payment_intent")
    charge_id = p.text("charge")
    if intent_id is None and charge_id is None:
        raise invalid_request(
            "One of the following params should be provided for this request: "
            "payment_intent or charge.",
            code="parameter_missing",
        )
    if intent_id is not None:
        pi = sb.store.get("payment_intent", intent_id, ctx.account, param="payment_intent")
        if pi["status"] != "succeeded" or not pi["latest_charge"]:
            raise _not_refundable(
                f"This PaymentIntent ({pi['id']}) does not have a successful charge to refund."
                + (
                    " It has not been captured yet: cancel it to release the authorization."
                    if pi["status"] == "requires_capture"
                    else ""
                )
            )
        charge_id = pi["latest_charge"]
    charge = sb.store.get("charge", charge_id, ctx.account, param="charge")
    if charge["status"] != "succeeded":
        raise _not_refundable(f"Charge {charge['id']} has not succeeded and cannot be refunded.")
    if not charge["captured"]:
        raise _not_refundable(
            f"Charge {charge['id']} has not been captured. Uncaptured charges cannot be "
            "refunded; cancel the PaymentIntent to release the authorization instead."
        )
    return charge


def create(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    amount = p.integer("amount", minimum=1)
    reason = p.enum("reason", REASONS)
    metadata = p.metadata() or {}
    charge = _charge_to_refund(sb, ctx, p)
    refusal = sb.faults.take_refund_refusal(charge["payment_intent"] or "")
    if refusal is not None:  # armed by a test (faults.RefundRefusalFault): nothing refunded
        raise invalid_request(refusal.message, code=refusal.code)
    remaining = charge["amount_captured"] - charge["amount_refunded"]
    if remaining <= 0:
        raise invalid_request(
            f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded"
        )
    if amount is None:
        amount = remaining
    if amount > remaining:
        raise invalid_request(
            f"Refund amount ({amount} {charge['currency']}) is greater than unrefunded amount "
            f"on charge ({remaining} {charge['currency']})",
            code="amount_too_large",
            param="amount",
        )
    refund: StripeObject = {
        "id": ids.new_id("re"),
        "object": "refund",
        "amount": amount,
        "balance_transaction": None,
        "charge": charge["id"],
        "created": sb.store.now(),
        "currency": charge["currency"],
        "destination_details": None,
        "failure_balance_transaction": None,
        "failure_reason": None,
        "metadata": metadata,
        "payment_intent": charge["payment_intent"],
        "reason": reason,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": "succeeded",
        "transfer_reversal": None,
    }
    sb.store.add("refund", refund, ctx.account)
    previous = {"amount_refunded": charge["amount_refunded"], "refunded": charge["refunded"]}
    charge["amount_refunded"] += amount
    charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]
    sb.store.emit("refund.created", refund, ctx)
    sb.store.emit("charge.refunded", charge, ctx, previous)
    _fail_later_if_test_card(sb, charge, refund["id"])
    return refund


def _fail_later_if_test_card(sb: Sandbox, charge: StripeObject, refund_id: str) -> None:
    """A refund of a charge paid with the refund-failure test card fails a moment later."""
    owner = sb.store.owner.get(charge["id"])
    pm = sb.store.get("payment_method", charge["payment_method"], owner)
    if not payment_methods.test_method_of(sb, pm).refund_fails:
        return
    if sb.config.refund_fail_after is None:
        return

    def change() -> None:
        refund = sb.store.objects.get("refund", {}).get(refund_id)
        if refund is not None and refund["status"] == "succeeded":
            fail(sb, None, refund, "expired_or_canceled_card")

    sb.background.call_later(sb.config.refund_fail_after, change, name=f"fail {refund_id}")


def fail(sb: Sandbox, ctx: Context | None, refund: StripeObject, reason: str) -> None:
    """A succeeded refund fails (the money never reached the customer): its amount goes back
    to the charge, to be refunded again."""
    if reason not in FAILURE_REASONS:
        raise invalid_request(
            f"Invalid failure_reason: must be one of {', '.join(FAILURE_REASONS)}"
        )
    if refund["status"] != "succeeded":
        raise invalid_request(f"Refund {refund['id']} is {refund['status']}: it cannot fail.")
    charge = sb.store.objects["charge"][refund["charge"]]
    previous = {"status": refund["status"], "failure_reason": None}
    refund["status"] = "failed"
    refund["failure_reason"] = reason
    refund["failure_balance_transaction"] = ids.new_id("txn")
    charge["amount_refunded"] -= refund["amount"]
    charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]
    sb.store.emit("refund.failed", refund, ctx, previous)
    sb.store.emit("refund.updated", refund, ctx, previous)
    sb.store.emit("charge.refund.updated", refund, ctx, previous)


def retrieve(sb: Sandbox, ctx: Context, p: Params, refund: str) -> StripeObject:
    return sb.store.get("refund", refund, ctx.account)


def update(sb: Sandbox, ctx: Context, p: Params, refund: str) -> StripeObject:
    obj = sb.store.get("refund", refund, ctx.account)
    metadata = merge_metadata(obj["metadata"], p.metadata())
    if metadata != obj["metadata"]:
        previous = {"metadata": obj["metadata"]}
        obj["metadata"] = metadata
        sb.store.emit("refund.updated", obj, ctx, previous)
    return obj


def list_(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    intent = p.text("payment_intent")
    charge = p.text("charge")
    return sb.store.list(
        "refund",
        p,
        "/v1/refunds",
        ctx.account,
        where=lambda r: (
            (intent is None or r["payment_intent"] == intent)
            and (charge is None or r["charge"] == charge)
        ),
    )
