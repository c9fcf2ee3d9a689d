"""Fatora payments in memory: checkouts by the merchant's order id, their hosted-page outcome,
verify and refund answers, and the webhook sent when a payment ends. The caller holds the kit
lock.

Card outcomes follow the Mastercard Gateway (MPGS) test data Fatora's acquirers use: the test
card numbers pay or not depending on the expiry date entered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from fatora_sandbox.config import FatoraConfig
from sandbox_kit import ids
from sandbox_kit.faults import ErrorReply
from sandbox_kit.runtime import Kit
from sandbox_kit.webhooks import Delivery, WebhookEvent

THREE_DECIMALS = frozenset({"KWD", "BHD", "OMR", "JOD", "IQD", "TND", "LYD"})
CURRENCIES = frozenset({"QAR", "USD", "EUR", "SAR", "AED", "EGP", "GBP"}) | THREE_DECIMALS
TEST_CARDS = frozenset({"5123450000000008", "4508750015741019", "2223000000000007"})
# MPGS test expiry dates -> (payment_status, description)
EXPIRY_OUTCOMES: dict[str, tuple[str, str]] = {
    "01/39": ("SUCCESS", "Transaction Successful - Approved"),
    "05/39": ("FAILURE", "Transaction Declined - Do not honour"),
    "04/27": ("FAILURE", "Transaction Declined - Expired card"),
    "08/28": ("PENDING", "Transaction pending - timed out at the acquirer"),
    "01/37": ("FAILURE", "Transaction Declined - Acquirer system error"),
}

Payment = dict[str, Any]


class FatoraError(Exception):
    """`{"status": "ERROR", "error": "..."}` with an HTTP status (the body's status decides)."""

    def __init__(self, message: str, status: int = 400, keep: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.keep = keep

    def body(self) -> dict[str, Any]:
        return {"status": "ERROR", "error": self.message}


def render_server_error(status: int, message: str | None) -> ErrorReply:
    body = FatoraError(message or "Internal server error", status).body()
    return ErrorReply(json.dumps(body).encode())


def decimals(currency: str) -> int:
    return 3 if currency in THREE_DECIMALS else 2


def to_minor(amount: Any, currency: str) -> int:
    """Major units as Fatora takes them (`123.100`) to integer minor units."""
    if isinstance(amount, bool) or not isinstance(amount, int | float | str):
        raise FatoraError("amount must be a number")
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        raise FatoraError("amount must be a number") from None
    minor = value.scaleb(decimals(currency))
    if minor != minor.to_integral_value():
        raise FatoraError(f"amount has more than {decimals(currency)} decimals for {currency}")
    if minor <= 0:
        raise FatoraError("amount must be greater than zero")
    return int(minor)


def to_major(minor: int, currency: str) -> float:
    return float(Decimal(minor).scaleb(-decimals(currency)))


def transaction_id() -> str:
    return ids.random_token(12, "0123456789")


@dataclass
class FatoraState:
    """All checkouts by payment id, and the merchant order id each one belongs to."""

    config: FatoraConfig
    kit: Kit = field(init=False)
    payments: dict[str, Payment] = field(default_factory=dict)  # by paymentID (page token)
    by_order: dict[str, str] = field(default_factory=dict)  # order_id -> paymentID

    @classmethod
    def create(cls, config: FatoraConfig) -> FatoraState:
        state = cls(config)
        state.kit = Kit.create(config.kit, signer=state.sign, render_error=render_server_error)
        state.kit.register_configured_endpoints(config.kit.webhook_secret or "")
        state.kit.on_reset.append(state.reset)
        return state

    def reset(self) -> None:
        self.payments.clear()
        self.by_order.clear()

    # -- API -------------------------------------------------------------------------------

    def checkout(self, body: dict[str, Any], base: str) -> dict[str, Any]:
        """A hosted-page URL for the order; asking again for an unpaid order gives the same page."""
        for name in ("amount", "currency", "order_id", "success_url", "failure_url"):
            if body.get(name) in (None, ""):
                raise FatoraError(f"{name} is required", keep=False)
        currency = str(body["currency"]).upper()
        if currency not in CURRENCIES:
            raise FatoraError(f"currency {currency} is not supported", keep=False)
        minor = to_minor(body["amount"], currency)
        order_id = str(body["order_id"])
        existing = self.payments.get(self.by_order.get(order_id, ""))
        if existing is not None:
            if existing["payment_status"] == "SUCCESS":
                raise FatoraError("This order is already paid", status=409)
            if (existing["minor"], existing["currency"]) != (minor, currency):
                raise FatoraError("order_id was already used with another amount", status=409)
            if existing["payment_status"] == "CREATED":
                return {"checkout_url": existing["checkout_url"]}
        payment_id = ids.random_token(24, ids.UPPER_DIGITS)
        client = body.get("client") if isinstance(body.get("client"), dict) else {}
        payment: Payment = {
            "payment_id": payment_id,
            "order_id": order_id,
            "transaction_id": None,
            "minor": minor,
            "currency": currency,
            "client": {k: client.get(k) for k in ("name", "email", "phone")},
            "note": body.get("note"),
            "language": body.get("language") or "en",
            "success_url": body["success_url"],
            "failure_url": body["failure_url"],
            "save_token": bool(body.get("save_token")),
            "payment_status": "CREATED",  # not in Fatora's verify vocabulary until the page is used
            "payment_date": "",
            "auth_code": None,
            "description": None,
            "card_token": None,
            "refund_status": None,
            "checkout_url": f"{base}/pay/MCPaymentPage?paymentID={payment_id}",
        }
        self.payments[payment_id] = payment
        self.by_order[order_id] = payment_id
        return {"checkout_url": payment["checkout_url"]}

    def find(self, body: dict[str, Any]) -> Payment:
        order_id = body.get("order_id")
        if order_id in (None, ""):
            raise FatoraError("order_id is required", keep=False)
        payment = self.payments.get(self.by_order.get(str(order_id), ""))
        wanted = body.get("transaction_id")
        if payment is None or (
            wanted not in (None, "") and str(wanted) != payment["transaction_id"]
        ):
            raise FatoraError("Transaction not found", status=404)
        return payment

    def verify(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.result(self.find(body))

    def refund(self, body: dict[str, Any]) -> dict[str, Any]:
        """Refund the whole payment (Fatora's refund API takes no amount)."""
        payment = self.find(body)
        self.refund_whole(payment)
        self.publish("refund.completed", payment)
        return {
            "refund_status": "completed",
            "order_id": payment["order_id"],
            "transaction_id": payment["transaction_id"],
        }

    def refund_whole(self, payment: Payment) -> None:
        """Fatora refunds a payment once, whole (the API's refund and the merchant's dashboard
        alike); afterwards verify answers `refund_status: completed`."""
        if payment["refund_status"] is not None:
            raise FatoraError("This transaction is already refunded", status=409)
        if payment["payment_status"] != "SUCCESS":
            raise FatoraError("Only successful transactions can be refunded", status=409)
        payment["refund_status"] = "completed"

    def result(self, payment: Payment) -> dict[str, Any]:
        """The `result` object of verify, as Fatora documents it."""
        status = payment["payment_status"]
        result: dict[str, Any] = {
            "order_id": payment["order_id"],
            "transaction_id": payment["transaction_id"],
            "amount": to_major(payment["minor"], payment["currency"]),
            "currency": payment["currency"],
            "client": payment["client"],
            "note": payment["note"],
            "payment_date": payment["payment_date"],
            "payment_status": "PENDING" if status == "CREATED" else status,
            "mode": "test",
            "auth_code": payment["auth_code"],
            "description": payment["description"],
            "card_token": payment["card_token"],
        }
        if payment["refund_status"] is not None:
            result["refund_status"] = payment["refund_status"]
        return result

    # -- the hosted page -------------------------------------------------------------------

    def pay(self, payment: Payment, card_number: str, expiry: str) -> None:
        """The buyer pressed Pay; the test card and expiry date decide the outcome."""
        number = "".join(ch for ch in card_number if ch.isdigit())
        expiry = expiry.replace(" ", "")
        if number not in TEST_CARDS:
            status, description = (
                "FAILURE",
                "Transaction Declined - Invalid card number (use a test card)",
            )
        else:
            status, description = EXPIRY_OUTCOMES.get(
                expiry, ("FAILURE", "Transaction Declined - Invalid expiry date")
            )
        payment["transaction_id"] = transaction_id()
        payment["description"] = description
        payment["payment_date"] = self.kit.clock.iso()
        if status == "SUCCESS" and payment["save_token"]:
            payment["card_token"] = ids.random_token(32, ids.UPPER_DIGITS)
        self.settle(payment, status)

    def settle(self, payment: Payment, status: str, description: str | None = None) -> None:
        """Record the outcome (the page's, or the admin API's for a PENDING payment) and tell
        the merchant's webhook."""
        payment["payment_status"] = status
        if description is not None:
            payment["description"] = description
        if status == "SUCCESS":
            payment["auth_code"] = ids.random_token(6, "0123456789")
        self.publish(f"payment.{status.lower()}", payment)

    # -- webhooks --------------------------------------------------------------------------

    def publish(self, event_type: str, payment: Payment) -> None:
        event_id = f"evt_{ids.random_token(20)}"
        body = {
            "id": event_id,
            "event": event_type,
            "status": "SUCCESS",
            "result": self.result(payment),
        }
        self.kit.webhooks.publish(
            WebhookEvent(event_id, event_type, json.dumps(body), payment["order_id"])
        )

    def sign(self, delivery: Delivery, attempt: int) -> dict[str, str]:
        digest = hmac.new(
            delivery.endpoint.secret.encode(), delivery.event.payload.encode(), hashlib.sha256
        )
        return {
            "Content-Type": "application/json",
            "User-Agent": "Fatora-Sandbox-Webhook/1.0",
            "X-Fatora-Event-Id": delivery.event.id,
            "X-Fatora-Signature": digest.hexdigest(),
        }
