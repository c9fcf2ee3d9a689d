"""Disputes (chargebacks) of captured charges, as Stripe's test mode makes them.

A charge paid with the dispute test card (`pm_card_createDispute`, 4000 0000 0000 0259) is
disputed as soon as it is captured: the dispute opens in `needs_response` with its funds withdrawn
(one balance transaction: the disputed amount and the dispute fee), announced by
`charge.dispute.created` then `charge.dispute.funds_withdrawn`. The inquiry card
(`pm_card_createDisputeInquiry`, 4000 0000 0000 1976) opens an inquiry instead
(`warning_needs_response`, no money moved). Evidence decides it as in test mode: `winning_evidence`
in `evidence[uncategorized_text]` wins it (the funds reinstated: a second balance transaction,
`charge.dispute.funds_reinstated`), `losing_evidence` loses it; closing it accepts the loss. Each
close sends `charge.dispute.closed`. The admin API disputes any captured charge and closes a
dispute with an outcome (admin.py)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Literal

from stripe_sandbox import ids
from stripe_sandbox.errors import invalid_request
from stripe_sandbox.params import Params, merge_metadata
from stripe_sandbox.store import Context, StripeObject

if TYPE_CHECKING:
    from stripe_sandbox.runtime import Sandbox

# Stripe's dispute fee in test mode, per currency (the US fee; other currencies as configured
# for the account: the sandbox charges the same number of minor units).
DISPUTE_FEE_MINOR = 1500
REASONS = (
    "bank_cannot_process",
    "credit_not_processed",
    "customer_initiated",
    "debit_not_authorized",
    "duplicate",
    "fraudulent",
    "general",
    "incorrect_account_details",
    "insufficient_funds",
    "product_not_received",
    "product_unacceptable",
    "subscription_canceled",
    "unrecognized",
)
WINNING_EVIDENCE = "winning_evidence"
LOSING_EVIDENCE = "losing_evidence"
Outcome = Literal["won", "lost", "warning_closed"]
_OPEN = ("warning_needs_response", "warning_under_review", "needs_response", "under_review")


def _balance_transaction(
    sb: Sandbox, dispute: StripeObject, amount: int, fee: int, description: str
) -> StripeObject:
    """A balance transaction of the dispute (type `adjustment`, as Stripe's): in the dispute's
    currency, or in the account's settlement currency when the dispute was opened with one (the
    amount converted at its `exchange_rate`, rounded half up, as Stripe reports it)."""
    settlement = sb.store.meta(dispute["id"]).get("settlement")
    currency, rate = dispute["currency"], None
    if settlement is not None:
        currency, rate = settlement
        amount = _converted(amount, rate)
    fee_details = (
        [
            {
                "amount": fee,
                "application": None,
                "currency": currency,
                "description": "Dispute fee",
                "type": "stripe_fee",
            }
        ]
        if fee
        else []
    )
    return {
        "id": ids.new_id("txn"),
        "object": "balance_transaction",
        "amount": amount,
        "available_on": sb.store.now(),
        "created": sb.store.now(),
        "currency": currency,
        "description": description,
        "exchange_rate": rate,
        "fee": fee,
        "fee_details": fee_details,
        "net": amount - fee,
        "reporting_category": "dispute" if amount < 0 else "dispute_reversal",
        "source": dispute["id"],
        "status": "pending",
        "type": "adjustment",
    }


def _converted(amount: int, rate: float) -> int:
    """An amount in minor units converted at `rate`, rounded half away from zero."""
    scaled = abs(amount) * Decimal(str(rate))
    whole = int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return whole if amount >= 0 else -whole


def open_dispute(
    sb: Sandbox,
    ctx: Context | None,
    charge: StripeObject,
    *,
    reason: str = "fraudulent",
    inquiry: bool = False,
    settlement: tuple[str, float] | None = None,
) -> StripeObject:
    """Dispute a captured charge in full: a chargeback (funds withdrawn, with the fee) or an
    inquiry (nothing withdrawn). `settlement` (currency, exchange rate): the account settles in
    another currency than the charge's, so the dispute's balance transactions are in it (the
    amount converted, the dispute fee charged in it)."""
    if not charge.get("captured") or charge.get("status") != "succeeded":
        raise invalid_request(f"Charge {charge['id']} has not been captured: nothing to dispute.")
    if charge.get("dispute"):
        raise invalid_request(f"Charge {charge['id']} is already disputed.")
    amount = int(charge["amount_captured"]) - int(charge["amount_refunded"])
    if amount <= 0:
        raise invalid_request(f"Charge {charge['id']} was refunded: nothing to dispute.")
    dispute: StripeObject = {
        "id": ids.new_id("dp"),
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": charge["id"],
        "created": sb.store.now(),
        "currency": charge["currency"],
        "evidence": {"uncategorized_text": None},
        "evidence_details": {
            "due_by": sb.store.now() + 7 * 86400,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": inquiry,
        "livemode": False,
        "metadata": {},
        "payment_intent": charge["payment_intent"],
        "reason": reason,
        "status": "warning_needs_response" if inquiry else "needs_response",
    }
    sb.store.add("dispute", dispute, sb.store.owner.get(charge["id"]))
    if settlement is not None:
        sb.store.meta(dispute["id"])["settlement"] = (settlement[0].lower(), settlement[1])
    charge["disputed"] = True
    charge["dispute"] = dispute["id"]
    sb.store.emit("charge.dispute.created", dispute, ctx)
    if not inquiry:
        withdrawal = _balance_transaction(
            sb, dispute, -amount, DISPUTE_FEE_MINOR, f"Chargeback withdrawal for {charge['id']}"
        )
        dispute["balance_transactions"].append(withdrawal)
        sb.store.emit("charge.dispute.funds_withdrawn", dispute, ctx)
    return dispute


def close(sb: Sandbox, ctx: Context | None, dispute: StripeObject, outcome: Outcome) -> None:
    """Close an open dispute: won (its funds reinstated; the fee stays charged, as Stripe's in
    the US), lost (the funds stay withdrawn) or an inquiry closed without a chargeback."""
    if dispute["status"] not in _OPEN:
        raise invalid_request(f"Dispute {dispute['id']} is already closed ({dispute['status']}).")
    inquiry = dispute["status"].startswith("warning_")
    if inquiry != (outcome == "warning_closed"):
        raise invalid_request(
            f"Dispute {dispute['id']} ({dispute['status']}) cannot close as {outcome}."
        )
    previous = {"status": dispute["status"]}
    if outcome == "won":
        reinstated = _balance_transaction(
            sb, dispute, dispute["amount"], 0, f"Chargeback reversal for {dispute['charge']}"
        )
        dispute["balance_transactions"].append(reinstated)
        dispute["status"] = "won"
        sb.store.emit("charge.dispute.funds_reinstated", dispute, ctx)
    dispute["status"] = outcome
    sb.store.emit("charge.dispute.closed", dispute, ctx, previous)


# -- API operations --------------------------------------------------------------------------


def retrieve(sb: Sandbox, ctx: Context, p: Params, dispute: str) -> StripeObject:
    return sb.store.get("dispute", dispute, ctx.account)


def update(sb: Sandbox, ctx: Context, p: Params, dispute: str) -> StripeObject:
    """Evidence and metadata; submitted evidence (the default) puts it under review, and the
    test-mode texts decide it at once."""
    obj = sb.store.get("dispute", dispute, ctx.account)
    evidence = p.sub("evidence")
    text = evidence.text("uncategorized_text")
    obj["metadata"] = merge_metadata(obj["metadata"], p.metadata())
    if text is not None:
        if obj["status"] not in _OPEN:
            raise invalid_request(f"Dispute {obj['id']} is closed: evidence cannot be changed.")
        obj["evidence"]["uncategorized_text"] = text
        obj["evidence_details"]["has_evidence"] = True
    submit = p.boolean("submit", default=True)
    if text is not None and submit and obj["status"] in _OPEN:
        previous = {"status": obj["status"]}
        obj["evidence_details"]["submission_count"] += 1
        obj["status"] = (
            "warning_under_review" if obj["status"].startswith("warning_") else "under_review"
        )
        sb.store.emit("charge.dispute.updated", obj, ctx, previous)
        inquiry = obj["status"] == "warning_under_review"
        if text == WINNING_EVIDENCE:
            close(sb, ctx, obj, "warning_closed" if inquiry else "won")
        elif text == LOSING_EVIDENCE and not inquiry:
            close(sb, ctx, obj, "lost")
    return obj


def close_api(sb: Sandbox, ctx: Context, p: Params, dispute: str) -> StripeObject:
    """`POST /v1/disputes/{id}/close`: the merchant accepts the dispute (lost)."""
    obj = sb.store.get("dispute", dispute, ctx.account)
    inquiry = str(obj["status"]).startswith("warning_")
    close(sb, ctx, obj, "warning_closed" if inquiry else "lost")
    return obj


def list_(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    intent = p.text("payment_intent")
    charge = p.text("charge")
    return sb.store.list(
        "dispute",
        p,
        "/v1/disputes",
        ctx.account,
        where=lambda d: (
            (intent is None or d["payment_intent"] == intent)
            and (charge is None or d["charge"] == charge)
        ),
    )
