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
    also_captures: list[str] | None = None,
    items_minor: list[int] | None = None,
) -> PayPalObject:
    """The buyer disputes a completed capture (all of it unless `amount_minor`), with
    `also_captures` several (all of them: one disputed amount, one transaction each); with
    `items_minor`, each transaction names its item's disputed amount (at most its capture), the
    dispute's amount their sum."""
    captures = [st.get("capture", c, "capture_id") for c in [capture_id, *(also_captures or [])]]
    capture = captures[0]
    for each in captures:
        if each["status"] not in ("COMPLETED", "PARTIALLY_REFUNDED"):
            raise unprocessable("TRANSACTION_NOT_DISPUTABLE", "The capture cannot be disputed.")
        if each["amount"]["currency_code"] != capture["amount"]["currency_code"]:
            raise unprocessable("TRANSACTION_NOT_DISPUTABLE", "Captures of several currencies.")
    facts = st.facts(capture_id)
    currency = str(capture["amount"]["currency_code"])
    captured = sum(money.parse_amount(c["amount"], "/amount")[0] for c in captures)
    minor = captured if amount_minor is None else amount_minor
    if items_minor is not None:
        grosses = [money.parse_amount(c["amount"], "/amount")[0] for c in captures]
        if len(items_minor) != len(captures) or any(map(int.__gt__, items_minor, grosses)):
            raise unprocessable("INVALID_DISPUTE_AMOUNT", "An item's amount is not its capture's.")
        if amount_minor is not None and amount_minor != sum(items_minor):
            raise unprocessable("INVALID_DISPUTE_AMOUNT", "The items do not sum to the amount.")
        minor = sum(items_minor)
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
                "seller_transaction_id": each["id"],
                "create_time": each["create_time"],
                "transaction_status": "COMPLETED",
                "gross_amount": each["amount"],
                "custom": each.get("custom_id"),
                "seller": {"merchant_id": st.config.client_id[:13].upper()},
                **(
                    {
                        "items": [
                            {
                                "item_id": "1",
                                "item_quantity": "1",
                                "dispute_amount": money.amount(items_minor[n], currency),
                            }
                        ]
                    }
                    if items_minor is not None
                    else {}
                ),
            }
            for n, each in enumerate(captures)
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


def _fee(dispute: PayPalObject) -> int:
    """The chargeback fee debited from the seller so far, net of credits."""
    total = 0
    for movement in dispute["money_movements"]:
        if movement["reason"] == "CHARGEBACK_FEE":
            value, _ = money.parse_amount(movement["amount"], "/amount")
            total += value if movement["type"] == "DEBIT" else -value
    return total


def update_dispute(
    st: PayPalState, dispute_id: str, status: str, fee_minor: int | None = None
) -> PayPalObject:
    """The dispute moves on (the seller answered, PayPal reviews, ...) without a decision;
    with `fee_minor`, PayPal changed its chargeback fee to that total (the difference debited
    or credited to the seller as a money movement of its own)."""
    dispute = get_dispute(st, dispute_id)
    if dispute["status"] == "RESOLVED":
        raise unprocessable("DISPUTE_RESOLVED", "The dispute is resolved.")
    now = st.kit.clock.iso()
    if fee_minor is not None and fee_minor != _fee(dispute):
        change = fee_minor - _fee(dispute)
        _, currency = money.parse_amount(dispute["dispute_amount"], "/dispute_amount")
        kind = "DEBIT" if change > 0 else "CREDIT"
        dispute["money_movements"].append(
            _movement(kind, "CHARGEBACK_FEE", abs(change), currency, now)
        )
    dispute["status"] = status
    dispute["update_time"] = now
    st.emit("CUSTOMER.DISPUTE.UPDATED", "dispute", dispute, f"Dispute {dispute_id} updated")
    return dispute


def resolve_dispute(
    st: PayPalState,
    dispute_id: str,
    outcome: str,
    refunded_minor: int | None,
    refunded_currency: str | None = None,
) -> PayPalObject:
    """PayPal decides: the held money released to the seller unless the buyer keeps it (all of
    it, or `refunded_minor` of it). A refund in `refunded_currency`, another currency than the
    dispute's, is shown as such and releases nothing (the sandbox converts nothing)."""
    dispute = get_dispute(st, dispute_id)
    if dispute["status"] == "RESOLVED":
        raise unprocessable("DISPUTE_RESOLVED", "The dispute is resolved.")
    minor, currency = money.parse_amount(dispute["dispute_amount"], "/dispute_amount")
    now = st.kit.clock.iso()
    buyer_keeps = outcome in BUYER_KEEPS
    refunded = (min(refunded_minor, minor) if refunded_minor else minor) if buyer_keeps else 0
    released = minor - refunded
    refund_currency = currency
    if buyer_keeps and refunded_currency and refunded_currency.upper() != currency:
        refund_currency, refunded = refunded_currency.upper(), refunded_minor or minor
        released = 0
    dispute["status"] = "RESOLVED"
    dispute["update_time"] = now
    dispute["dispute_outcome"] = {"outcome_code": outcome}
    if refunded:
        dispute["dispute_outcome"]["amount_refunded"] = money.amount(refunded, refund_currency)
    if released:
        dispute["money_movements"].append(
            _movement("CREDIT", "DISPUTE_SETTLEMENT", released, currency, now)
        )
    st.emit("CUSTOMER.DISPUTE.RESOLVED", "dispute", dispute, f"Dispute {dispute_id} resolved")
    return dispute
