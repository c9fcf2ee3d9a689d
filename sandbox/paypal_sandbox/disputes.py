"""Customer disputes (`GET /v1/customer/disputes/{id}`): a capture disputed, its dispute moved
through PayPal's statuses and resolved, each step sent as PayPal's `CUSTOMER.DISPUTE.*` webhook
with the dispute as its resource. PayPal holds the disputed amount from the seller's balance
when the dispute opens (a `money_movements` entry) and releases it when the seller wins. The
caller holds the kit lock."""

from __future__ import annotations

from paypal_sandbox import money
from paypal_sandbox.errors import unprocessable
from paypal_sandbox.state import PayPalObject, PayPalState, paypal_id

# Outcomes that leave the disputed money with the buyer; any other releases it to the seller.
BUYER_KEEPS = ("RESOLVED_BUYER_FAVOUR", "ACCEPTED")


def get_dispute(st: PayPalState, dispute_id: str) -> PayPalObject:
    return st.get("dispute", dispute_id, "dispute_id")


def _movement(kind: str, reason: str, minor: int, currency: str, now: str) -> PayPalObject:
    return {
        "affected_party": "SELLER",
        "amount": money.amount(minor, currency),
        "initiated_time": now,
        "type": kind,
        "reason": reason,
    }


def open_dispute(
    st: PayPalState,
    capture_id: str,
    amount_minor: int | None,
    reason: str,
    stage: str,
    fee_minor: int,
) -> PayPalObject:
    """The buyer disputes a completed capture (all of it unless `amount_minor`)."""
    capture = st.get("capture", capture_id, "capture_id")
    if capture["status"] not in ("COMPLETED", "PARTIALLY_REFUNDED"):
        raise unprocessable("TRANSACTION_NOT_DISPUTABLE", "The capture cannot be disputed.")
    facts = st.facts(capture_id)
    currency = str(capture["amount"]["currency_code"])
    captured, _ = money.parse_amount(capture["amount"], "/amount")
    minor = captured if amount_minor is None else amount_minor
    if minor > captured:
        raise unprocessable("INVALID_DISPUTE_AMOUNT", "More than the capture.")
    now = st.kit.clock.iso()
    dispute_id = f"PP-D-{paypal_id()[:8]}"
    movements = [_movement("DEBIT", "DISPUTE_SETTLEMENT", minor, currency, now)]
    if fee_minor:
        movements.append(_movement("DEBIT", "CHARGEBACK_FEE", fee_minor, currency, now))
    dispute: PayPalObject = {
        "dispute_id": dispute_id,
        "create_time": now,
        "update_time": now,
        "disputed_transactions": [
            {
                "buyer_transaction_id": paypal_id(),
                "seller_transaction_id": capture_id,
                "create_time": capture["create_time"],
                "transaction_status": "COMPLETED",
                "gross_amount": capture["amount"],
                "custom": capture.get("custom_id"),
                "seller": {"merchant_id": st.config.client_id[:13].upper()},
            }
        ],
        "reason": reason,
        "status": "WAITING_FOR_SELLER_RESPONSE",
        "dispute_amount": money.amount(minor, currency),
        "dispute_life_cycle_stage": stage,
        "dispute_channel": "EXTERNAL" if stage != "INQUIRY" else "INTERNAL",
        "money_movements": movements,
        "links": [
            {
                "href": f"{st.base_url}/v1/customer/disputes/{dispute_id}",
                "rel": "self",
                "method": "GET",
            }
        ],
    }
    st.add("dispute", dispute)
    st.link(dispute_id, facts.get("order_id"), capture_id=capture_id)
    st.emit(
        "CUSTOMER.DISPUTE.CREATED",
        "dispute",
        dispute,
        f"A new dispute opened with Case # {dispute_id}",
    )
    return dispute


def update_dispute(st: PayPalState, dispute_id: str, status: str) -> PayPalObject:
    """The dispute moves on (the seller answered, PayPal reviews, ...) without a decision."""
    dispute = get_dispute(st, dispute_id)
    if dispute["status"] == "RESOLVED":
        raise unprocessable("DISPUTE_RESOLVED", "The dispute is resolved.")
    dispute["status"] = status
    dispute["update_time"] = st.kit.clock.iso()
    st.emit("CUSTOMER.DISPUTE.UPDATED", "dispute", dispute, f"Dispute {dispute_id} updated")
    return dispute


def resolve_dispute(
    st: PayPalState, dispute_id: str, outcome: str, refunded_minor: int | None
) -> PayPalObject:
    """PayPal decides: the held money released to the seller unless the buyer keeps it (all of
    it, or `refunded_minor` of it)."""
    dispute = get_dispute(st, dispute_id)
    if dispute["status"] == "RESOLVED":
        raise unprocessable("DISPUTE_RESOLVED", "The dispute is resolved.")
    minor, currency = money.parse_amount(dispute["dispute_amount"], "/dispute_amount")
    now = st.kit.clock.iso()
    buyer_keeps = outcome in BUYER_KEEPS
    refunded = (min(refunded_minor, minor) if refunded_minor else minor) if buyer_keeps else 0
    released = minor - refunded
    dispute["status"] = "RESOLVED"
    dispute["update_time"] = now
    dispute["dispute_outcome"] = {"outcome_code": outcome}
    if refunded:
        dispute["dispute_outcome"]["amount_refunded"] = money.amount(refunded, currency)
    if released:
        dispute["money_movements"].append(
            _movement("CREDIT", "DISPUTE_SETTLEMENT", released, currency, now)
        )
    st.emit("CUSTOMER.DISPUTE.RESOLVED", "dispute", dispute, f"Dispute {dispute_id} resolved")
    return dispute
