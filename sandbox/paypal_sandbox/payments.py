"""Payments v2: authorizations (capture, void), captures (refund) and refunds, with PayPal's
statuses and refusals. The caller holds the kit lock."""

from __future__ import annotations

from typing import Any

from paypal_sandbox import money
from paypal_sandbox.errors import unprocessable
from paypal_sandbox.orders import Call, check_mock, new_capture, refresh_order
from paypal_sandbox.state import PayPalObject, PayPalState, paypal_id


def get_authorization(st: PayPalState, authorization_id: str) -> PayPalObject:
    return st.get("authorization", authorization_id, "authorization_id")


def get_capture(st: PayPalState, capture_id: str) -> PayPalObject:
    return st.get("capture", capture_id, "capture_id")


def get_refund(st: PayPalState, refund_id: str) -> PayPalObject:
    return st.get("refund", refund_id, "refund_id")


def _requested(body: dict[str, Any], default: int, currency: str) -> int:
    if body.get("amount") is None:
        return default
    minor, asked_currency = money.parse_amount(body["amount"], "/amount")
    if asked_currency != currency:
        raise unprocessable(
            "CURRENCY_MISMATCH",
            "Currency of capture must be the same as currency of authorization.",
        )
    return minor


def capture_authorization(st: PayPalState, authorization_id: str, call: Call) -> PayPalObject:
    check_mock(call)
    auth = get_authorization(st, authorization_id)
    facts = st.facts(authorization_id)
    if auth["status"] == "VOIDED":
        raise unprocessable(
            "AUTHORIZATION_VOIDED", "A voided authorization cannot be captured or reauthorized."
        )
    if auth["status"] == "CAPTURED":
        raise unprocessable(
            "AUTHORIZATION_ALREADY_CAPTURED", "Authorization has already been captured."
        )
    if auth["status"] == "EXPIRED":
        raise unprocessable("AUTHORIZATION_EXPIRED", "An expired authorization cannot be captured.")
    currency = facts["currency"]
    remaining = facts["minor"] - facts["captured"]
    minor = _requested(call.body, remaining, currency)
    if minor > remaining:
        raise unprocessable(
            "MAX_CAPTURE_AMOUNT_EXCEEDED", "Capture amount exceeds allowable limit."
        )
    # PayPal's default is final_capture=false: the rest of the authorization stays capturable.
    final = bool(call.body.get("final_capture", False))
    up = f"{call.base}/v2/payments/authorizations/{authorization_id}"
    made = new_capture(
        st,
        minor,
        currency,
        facts.get("funding", "balance"),
        up,
        call.base,
        final=final,
        invoice_id=call.body.get("invoice_id"),
        custom_id=auth.get("custom_id"),
        related={"order_id": facts["order_id"], "authorization_id": authorization_id},
    )
    st.link(made["id"], facts["order_id"], authorization_id=authorization_id)
    facts["captured"] += minor
    auth["status"] = (
        "CAPTURED" if final or facts["captured"] >= facts["minor"] else "PARTIALLY_CAPTURED"
    )
    auth["update_time"] = st.kit.clock.iso()
    refresh_order(st, facts["order_id"])
    return made


def void_authorization(st: PayPalState, authorization_id: str, call: Call) -> PayPalObject:
    check_mock(call)
    auth = get_authorization(st, authorization_id)
    if auth["status"] == "VOIDED":
        raise unprocessable(
            "PREVIOUSLY_VOIDED",
            "Authorization has been previously voided and hence cannot be voided again.",
        )
    if auth["status"] in ("CAPTURED", "PARTIALLY_CAPTURED"):
        raise unprocessable(
            "PREVIOUSLY_CAPTURED",
            "Authorization has been previously captured and hence cannot be voided.",
        )
    auth["status"] = "VOIDED"
    auth["update_time"] = st.kit.clock.iso()
    auth["links"] = [link for link in auth["links"] if link["rel"] in ("self", "up")]
    refresh_order(st, st.facts(authorization_id).get("order_id"))
    st.emit(
        "PAYMENT.AUTHORIZATION.VOIDED", "authorization", auth, "A payment authorization was voided"
    )
    return auth


def refund_capture(st: PayPalState, capture_id: str, call: Call) -> PayPalObject:
    check_mock(call)
    cap = get_capture(st, capture_id)
    facts = st.facts(capture_id)
    if cap["status"] == "REFUNDED":
        raise unprocessable(
            "CAPTURE_FULLY_REFUNDED", "The capture has already been fully refunded."
        )
    if cap["status"] not in ("COMPLETED", "PARTIALLY_REFUNDED"):
        raise unprocessable(
            "INVALID_RESOURCE_STATE", f"A {cap['status']} capture cannot be refunded."
        )
    currency = facts["currency"]
    remaining = facts["minor"] - facts["refunded"]
    minor = _requested(call.body, remaining, currency)
    if minor > remaining:
        raise unprocessable(
            "REFUND_AMOUNT_EXCEEDED",
            "The refund amount must be less than or equal to the capture amount that has not yet been refunded.",
        )
    now = st.kit.clock.iso()
    rid = paypal_id()
    refund: PayPalObject = {
        "id": rid,
        "status": "COMPLETED",
        "amount": money.amount(minor, currency),
        "seller_payable_breakdown": {
            "gross_amount": money.amount(minor, currency),
            "paypal_fee": money.amount(0, currency),
            "net_amount": money.amount(minor, currency),
            "total_refunded_amount": money.amount(facts["refunded"] + minor, currency),
        },
        "create_time": now,
        "update_time": now,
        "links": [
            {"href": f"{call.base}/v2/payments/refunds/{rid}", "rel": "self", "method": "GET"},
            {
                "href": f"{call.base}/v2/payments/captures/{capture_id}",
                "rel": "up",
                "method": "GET",
            },
        ],
    }
    for key in ("invoice_id", "custom_id", "note_to_payer"):
        if call.body.get(key):
            refund[key] = call.body[key]
    st.add("refund", refund)
    st.link(rid, facts.get("order_id"), capture_id=capture_id)
    facts["refunded"] += minor
    cap["status"] = "REFUNDED" if facts["refunded"] >= facts["minor"] else "PARTIALLY_REFUNDED"
    cap["update_time"] = now
    refresh_order(st, facts.get("order_id"))
    st.emit(
        "PAYMENT.CAPTURE.REFUNDED",
        "refund",
        refund,
        f"A {money.amount(minor, currency)['value']} {currency} capture payment was refunded",
    )
    return refund


def settle_capture(st: PayPalState, capture_id: str, outcome: str) -> PayPalObject:
    """A PENDING capture clears (COMPLETED) or is denied (DECLINED) - admin API only."""
    cap = get_capture(st, capture_id)
    if cap["status"] != "PENDING":
        raise unprocessable(
            "INVALID_RESOURCE_STATE", f"The capture is {cap['status']}, not PENDING."
        )
    facts = st.facts(capture_id)
    cap.pop("status_details", None)
    cap["update_time"] = st.kit.clock.iso()
    if outcome == "COMPLETED":
        cap["status"] = "COMPLETED"
        fee = money.fee(facts["minor"])
        cap["seller_receivable_breakdown"] = {
            "gross_amount": money.amount(facts["minor"], facts["currency"]),
            "paypal_fee": money.amount(fee, facts["currency"]),
            "net_amount": money.amount(facts["minor"] - fee, facts["currency"]),
        }
        st.emit("PAYMENT.CAPTURE.COMPLETED", "capture", cap, "Payment completed")
    else:
        cap["status"] = "DECLINED"
        st.emit("PAYMENT.CAPTURE.DENIED", "capture", cap, "Payment denied")
    refresh_order(st, facts.get("order_id"))
    return cap
