"""Orders, payments and refunds with Razorpay's statuses, amounts in the smallest unit, its
business refusals and events. The caller holds the kit lock."""

from __future__ import annotations

import re
from typing import Any

from razorpay_sandbox.errors import invalid, refused
from razorpay_sandbox.state import Entity, RazorpayState, razorpay_id

MIN_AMOUNT = 100  # one rupee (or one unit of other currencies), in the smallest unit
CURRENCIES = frozenset({"INR", "USD", "EUR", "GBP", "SGD", "AED", "MYR"})
MAX_NOTES = 15

# Cards that pay in test mode (Razorpay's documented domestic test cards).
TEST_CARDS = {
    "4111111111111111": ("Visa", "credit"),
    "4386289407660153": ("Visa", "credit"),
    "5267318187975449": ("MasterCard", "credit"),
    "5104015555555558": ("MasterCard", "debit"),
}
UPI_SUCCESS = "success@razorpay"
UPI_FAILURE = "failure@razorpay"


def collection(items: list[Entity]) -> Entity:
    return {"entity": "collection", "count": len(items), "items": items}


def _notes(body: dict[str, Any]) -> Any:
    notes = body.get("notes")
    if notes in (None, {}, []):
        return []  # Razorpay answers empty notes as an empty list
    if not isinstance(notes, dict) or len(notes) > MAX_NOTES:
        raise invalid("notes should be an object with at most 15 keys", "notes")
    return {str(k): str(v) for k, v in notes.items()}


def _amount(value: Any, field: str = "amount") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.isdigit():
            return int(value)
        raise invalid(f"The {field} must be an integer.", field)
    return value


def _flag(value: Any, default: bool) -> bool:
    if value is None:
        return default
    return value in (True, 1, "1", "true")


# -- orders ---------------------------------------------------------------------------------


def create_order(st: RazorpayState, body: dict[str, Any]) -> Entity:
    if body.get("amount") is None:
        raise invalid("The amount field is required.", "amount")
    amount = _amount(body["amount"])
    currency = body.get("currency")
    if currency is None:
        raise invalid("The currency field is required.", "currency")
    if currency not in CURRENCIES:
        raise invalid("The currency is not supported.", "currency")
    if amount < MIN_AMOUNT:
        raise invalid(f"The amount must be atleast {currency} 1.00", "amount")
    receipt = body.get("receipt")
    if receipt is not None and len(str(receipt)) > 40:
        raise invalid("The receipt may not be greater than 40 characters.", "receipt")
    order: Entity = {
        "id": razorpay_id("order"),
        "entity": "order",
        "amount": amount,
        "amount_paid": 0,
        "amount_due": amount,
        "currency": currency,
        "receipt": receipt,
        "offer_id": None,
        "status": "created",
        "attempts": 0,
        "notes": _notes(body),
        "created_at": st.kit.clock.now(),
    }
    st.add("order", order)
    # Razorpay captures automatically unless the order says otherwise (the account default).
    st.facts(order["id"])["auto_capture"] = _flag(body.get("payment_capture"), True)
    return order


def order_payments(st: RazorpayState, order_id: str) -> Entity:
    st.get("order", order_id)
    return collection([p for p in st.all("payment") if p["order_id"] == order_id])


# -- payments (made on the hosted checkout page) ----------------------------------------------


def luhn_ok(number: str) -> bool:
    digits = [int(d) for d in number]
    for i in range(len(digits) - 2, -1, -2):
        digits[i] = digits[i] * 2 - 9 if digits[i] * 2 > 9 else digits[i] * 2
    return len(number) >= 12 and sum(digits) % 10 == 0


def start_payment(st: RazorpayState, order: Entity, method: str, form: dict[str, str]) -> Entity:
    """A payment attempt for the order, `created` until the bank page decides it.

    Refuses malformed card input (nothing is created), as Checkout does before paying.
    """
    if order["status"] == "paid":
        raise refused("Order has already been paid.")
    payment: Entity = {
        "id": razorpay_id("pay"),
        "entity": "payment",
        "amount": order["amount_due"],
        "currency": order["currency"],
        "status": "created",
        "order_id": order["id"],
        "invoice_id": None,
        "international": False,
        "method": method,
        "amount_refunded": 0,
        "refund_status": None,
        "captured": False,
        "description": form.get("description") or None,
        "card_id": None,
        "bank": None,
        "wallet": None,
        "vpa": None,
        "email": form.get("email") or "buyer@example.com",
        "contact": form.get("contact") or "+919000090000",
        "notes": order["notes"],
        "fee": None,
        "tax": None,
        "error_code": None,
        "error_description": None,
        "error_source": None,
        "error_step": None,
        "error_reason": None,
        "acquirer_data": {},
        "created_at": st.kit.clock.now(),
    }
    if method == "card":
        number = re.sub(r"\D", "", form.get("card_number", ""))
        if not number or not luhn_ok(number):
            raise invalid("Your card number is invalid.", "card[number]")
        network, card_type = TEST_CARDS.get(number, ("Visa", "credit"))
        card_id = razorpay_id("card")
        payment["card_id"] = card_id
        payment["card"] = {
            "id": card_id,
            "entity": "card",
            "name": form.get("name") or "Sandbox Buyer",
            "last4": number[-4:],
            "network": network,
            "type": card_type,
            "issuer": None,
            "international": False,
            "emi": False,
        }
        st.facts(payment["id"])["test_card"] = number in TEST_CARDS
    elif method == "upi":
        vpa = form.get("vpa", "").strip()
        if "@" not in vpa:
            raise invalid("Invalid VPA. Please enter a valid Virtual Payment Address", "vpa")
        payment["vpa"] = vpa
    else:
        raise invalid("Invalid payment method given: " + method, "method")
    st.add("payment", payment)
    order["attempts"] += 1
    order["status"] = "attempted"
    return payment


def authorize(st: RazorpayState, payment: Entity) -> None:
    """The bank approved: `authorized`, then `captured` at once when the order auto-captures."""
    order = st.get("order", payment["order_id"])
    payment["status"] = "authorized"
    st.facts(payment["id"])["authorized_at"] = st.kit.clock.time()
    st.emit("payment.authorized", payment=payment)
    if st.facts(order["id"]).get("auto_capture", True):
        _capture(st, payment, order)


def fail(
    st: RazorpayState, payment: Entity, description: str, reason: str, source: str = "customer"
) -> None:
    payment["status"] = "failed"
    payment.update(
        error_code="BAD_REQUEST_ERROR",
        error_description=description,
        error_source=source,
        error_step="payment_authentication",
        error_reason=reason,
    )
    st.emit("payment.failed", payment=payment)


def _capture(st: RazorpayState, payment: Entity, order: Entity) -> None:
    fee = round(payment["amount"] * 0.02)  # Razorpay's standard 2% (tax included, sandbox)
    tax = round(fee * 18 / 118)
    payment.update(status="captured", captured=True, fee=fee, tax=tax)
    st.emit("payment.captured", payment=payment)
    order["amount_paid"] += payment["amount"]
    order["amount_due"] = max(0, order["amount"] - order["amount_paid"])
    if order["amount_due"] == 0:
        order["status"] = "paid"
        st.emit("order.paid", payment=payment, order=order)


def capture(st: RazorpayState, payment_id: str, body: dict[str, Any]) -> Entity:
    payment = st.get("payment", payment_id)
    if body.get("amount") is None:
        raise invalid("The amount field is required.", "amount")
    amount = _amount(body["amount"])
    if payment["status"] == "captured" or payment["captured"]:
        raise refused("This payment has already been captured")
    if payment["status"] != "authorized":
        raise refused(
            "Only payments which have been authorized and not yet captured can be captured"
        )
    currency = body.get("currency", payment["currency"])
    if currency != payment["currency"]:
        raise refused("The currency should be same as the payment currency", "currency")
    if amount != payment["amount"]:
        raise refused("Capture amount must be equal to the amount authorized", "amount")
    _capture(st, payment, st.get("order", payment["order_id"]))
    return payment


# -- refunds --------------------------------------------------------------------------------


def _new_refund(st: RazorpayState, payment: Entity, amount: int, body: dict[str, Any]) -> Entity:
    speed = body.get("speed") or "normal"
    if speed not in ("normal", "optimum"):
        raise invalid("The selected speed is invalid.", "speed")
    refund: Entity = {
        "id": razorpay_id("rfnd"),
        "entity": "refund",
        "amount": amount,
        "currency": payment["currency"],
        "payment_id": payment["id"],
        "notes": _notes(body),
        "receipt": body.get("receipt"),
        "acquirer_data": {"arn": None},
        "created_at": st.kit.clock.now(),
        "batch_id": None,
        "status": "processed",  # test mode processes refunds at once
        "speed_processed": "normal",
        "speed_requested": speed,
    }
    st.add("refund", refund)
    payment["amount_refunded"] += amount
    full = payment["amount_refunded"] >= payment["amount"]
    payment["refund_status"] = "full" if full else "partial"
    if full:
        payment["status"] = "refunded"
    st.emit("refund.created", refund=refund, payment=payment)
    st.emit("refund.processed", refund=refund, payment=payment)
    return refund


def refund(st: RazorpayState, payment_id: str, body: dict[str, Any]) -> Entity:
    payment = st.get("payment", payment_id)
    if payment["status"] == "refunded":
        raise refused("The payment has been fully refunded already")
    if payment["status"] != "captured":
        raise refused("Payment should be captured before refund")
    remaining = payment["amount"] - payment["amount_refunded"]
    amount = remaining if body.get("amount") is None else _amount(body["amount"])
    if amount < MIN_AMOUNT and amount != remaining:
        raise invalid("The amount must be atleast INR 1.00", "amount")
    if amount > remaining:
        raise refused("The refund amount provided is greater than amount captured", "amount")
    return _new_refund(st, payment, amount, body)


def payment_refunds(st: RazorpayState, payment_id: str) -> Entity:
    st.get("payment", payment_id)
    return collection([r for r in st.all("refund") if r["payment_id"] == payment_id])


def refund_uncaptured(st: RazorpayState) -> None:
    """Razorpay refunds payments left `authorized` past the capture window (its "void")."""
    window = st.config.auto_refund_after
    if window is None:
        return
    now = st.kit.clock.time()
    for payment in st.all("payment"):
        authorized_at = st.facts(payment["id"]).get("authorized_at")
        if (
            payment["status"] == "authorized"
            and authorized_at is not None
            and now - authorized_at >= window
        ):
            refund = _new_refund(st, payment, payment["amount"], {})
            st.facts(refund["id"])["automatic"] = True
