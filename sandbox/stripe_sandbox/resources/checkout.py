"""Checkout Sessions: hosted payment pages that create and confirm a PaymentIntent when paid,
complete (`checkout.session.completed`) or expire (`checkout.session.expired`)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stripe_sandbox import ids
from stripe_sandbox.cards import method_for_card_number
from stripe_sandbox.errors import StripeAPIError, invalid_param, invalid_request, missing_param
from stripe_sandbox.params import Params
from stripe_sandbox.resources import payment_intents, payment_methods
from stripe_sandbox.store import Context, StripeObject

if TYPE_CHECKING:
    from stripe_sandbox.runtime import Sandbox

MAX_LIFETIME = 24 * 3600
SESSION_ID_PLACEHOLDER = "{CHECKOUT_SESSION_ID}"


def _line_items(p: Params) -> tuple[list[StripeObject], str, int]:
    """Line items as Stripe lists them, their common currency and the total."""
    items = p.items("line_items")
    if not items:
        raise missing_param("line_items")
    lines: list[StripeObject] = []
    currencies: set[str] = set()
    for item in items:
        if "price" in item:
            raise invalid_request(
                f"No such price: '{item.text('price')}' (the sandbox supports price_data only)",
                code="resource_missing",
                param=f"{item.prefix}[price]",
            )
        quantity = item.integer("quantity", required=True, minimum=1)
        price_data = item.sub("price_data")
        currency = price_data.currency("currency", required=True)
        unit_amount = price_data.integer("unit_amount", required=True, minimum=0)
        name = price_data.sub("product_data").text("name", required=True)
        assert quantity is not None and currency is not None and unit_amount is not None
        currencies.add(currency)
        total = unit_amount * quantity
        lines.append(
            {
                "id": ids.new_id("li"),
                "object": "item",
                "amount_discount": 0,
                "amount_subtotal": total,
                "amount_tax": 0,
                "amount_total": total,
                "currency": currency,
                "description": name,
                "price": {
                    "id": ids.new_id("price"),
                    "object": "price",
                    "active": False,
                    "currency": currency,
                    "product": ids.new_id("prod"),
                    "type": "one_time",
                    "unit_amount": unit_amount,
                },
                "quantity": quantity,
            }
        )
    if len(currencies) != 1:
        raise invalid_request("All line items must use the same currency.", param="line_items")
    currency = currencies.pop()
    return lines, currency, sum(line["amount_total"] for line in lines)


def create(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    mode = p.enum("mode", ("payment", "subscription", "setup"))
    if mode is None:
        raise missing_param("mode")
    if mode == "setup":
        raise invalid_param("The sandbox supports mode=payment only.", param="mode")
    lines, currency, amount_total = _line_items(p)
    payment_intents.check_amount(amount_total, currency, param="line_items")
    customer = p.text("customer")
    customer_email = p.text("customer_email")
    if customer and customer_email:
        raise invalid_request(
            "You may only specify one of these parameters: customer, customer_email.",
            param="customer_email",
        )
    if customer:
        sb.store.get("customer", customer, ctx.account, param="customer")
    now = sb.store.now()
    expires_at = p.integer("expires_at")
    if expires_at is None:
        expires_at = now + MAX_LIFETIME
    elif not now < expires_at <= now + MAX_LIFETIME:
        # Stripe also requires at least 30 minutes; the sandbox allows less so tests can wait.
        raise invalid_param(
            "The `expires_at` timestamp must be in the future and less than 24 hours from "
            "Checkout Session creation.",
            param="expires_at",
        )
    pi_data = p.sub("payment_intent_data")
    capture_method = pi_data.enum(
        "capture_method", payment_intents.CAPTURE_METHODS, default="automatic_async"
    )
    session_id = ids.new_id("cs_test")
    session: StripeObject = {
        "id": session_id,
        "object": "checkout.session",
        "after_expiration": None,
        "allow_promotion_codes": None,
        "amount_subtotal": amount_total,
        "amount_total": amount_total,
        "cancel_url": p.text("cancel_url"),
        "client_reference_id": p.text("client_reference_id", max_length=200),
        "created": now,
        "currency": currency,
        "customer": customer,
        "customer_creation": None if customer else "if_required",
        "customer_details": None,
        "customer_email": customer_email,
        "expires_at": expires_at,
        "livemode": False,
        "locale": None,
        "metadata": p.metadata() or {},
        "mode": mode,
        "payment_intent": None,
        "payment_method_types": ["card"],
        "payment_status": "unpaid",
        "status": "open",
        "success_url": p.text("success_url"),
        "ui_mode": "hosted",
        "url": f"{ctx.base_url}/checkout/{session_id}",
    }
    sb.store.add("checkout.session", session, ctx.account)
    meta = sb.store.meta(session_id)
    meta["line_items"] = lines
    meta["payment_intent_data"] = {
        "metadata": pi_data.metadata() or {},
        "description": pi_data.text("description"),
        "capture_method": capture_method,
        "receipt_email": pi_data.text("receipt_email"),
    }
    return session


def _session(sb: Sandbox, ctx: Context, session_id: str) -> StripeObject:
    session = sb.store.get("checkout.session", session_id, ctx.account)
    expire_if_due(sb, session)
    return session


def retrieve(sb: Sandbox, ctx: Context, p: Params, session: str) -> StripeObject:
    return _session(sb, ctx, session)


def list_(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    expire_due(sb)
    filters = {
        name: p.text(name)
        for name in ("payment_intent", "customer", "status", "client_reference_id")
    }
    return sb.store.list(
        "checkout.session",
        p,
        "/v1/checkout/sessions",
        ctx.account,
        where=lambda s: all(v is None or s[k] == v for k, v in filters.items()),
    )


def list_line_items(sb: Sandbox, ctx: Context, p: Params, session: str) -> StripeObject:
    obj = _session(sb, ctx, session)
    lines = sb.store.meta(obj["id"])["line_items"]
    return {
        "object": "list",
        "data": lines,
        "has_more": False,
        "url": f"/v1/checkout/sessions/{obj['id']}/line_items",
    }


def expire(sb: Sandbox, ctx: Context, p: Params, session: str) -> StripeObject:
    obj = _session(sb, ctx, session)
    if obj["status"] != "open":
        raise invalid_request(
            f"This Checkout Session is {obj['status']} and can no longer be expired. "
            "Only Checkout Sessions with a status of open can be expired.",
            code="checkout_session_unexpected_state",
        )
    _expire(sb, ctx, obj)
    return obj


def _expire(sb: Sandbox, ctx: Context | None, session: StripeObject) -> None:
    session["status"] = "expired"
    session["url"] = None
    intent_id = session["payment_intent"]
    if intent_id:
        pi = sb.store.objects["payment_intent"][intent_id]
        if pi["status"] in payment_intents.CANCELABLE:
            payment_intents.void(sb, ctx, pi, "abandoned")
    sb.store.emit("checkout.session.expired", session, ctx)


def expire_if_due(sb: Sandbox, session: StripeObject) -> None:
    if session["status"] == "open" and sb.store.now() >= session["expires_at"]:
        _expire(sb, None, session)


def expire_due(sb: Sandbox) -> None:
    """Expire every open session past its `expires_at` (run periodically)."""
    for session in list(sb.store.objects.get("checkout.session", {}).values()):
        expire_if_due(sb, session)


def payment_authorized(sb: Sandbox, ctx: Context | None, pi: StripeObject) -> None:
    """Called when any PaymentIntent succeeds or is authorized: completes its session."""
    session_id = sb.store.meta(pi["id"]).get("checkout_session")
    if session_id is None:
        return
    session = sb.store.objects["checkout.session"][session_id]
    if session["status"] != "open":
        return
    email = session["customer_email"]
    if email is None and session["customer"]:
        email = sb.store.objects["customer"].get(session["customer"], {}).get("email")
    session["status"] = "complete"
    session["payment_status"] = "paid" if pi["status"] == "succeeded" else "unpaid"
    session["url"] = None
    session["customer_details"] = {
        "address": None,
        "email": email,
        "name": sb.store.meta(session_id).get("cardholder_name"),
        "phone": None,
        "tax_exempt": "none",
        "tax_ids": [],
    }
    sb.store.emit("checkout.session.completed", session, ctx)


# -- the hosted page -------------------------------------------------------------------------


@dataclass(frozen=True)
class PageOutcome:
    """What the hosted page does after a Pay press: redirect, or show an error."""

    redirect: str | None = None
    error: str | None = None
    status_code: int = 303


def success_url(session: StripeObject) -> str | None:
    url = session["success_url"]
    return url.replace(SESSION_ID_PLACEHOLDER, session["id"]) if url else None


def _expiry(raw: str) -> tuple[int, int] | str:
    match = re.fullmatch(r"\s*(\d{1,2})\s*/\s*(\d{2}|\d{4})\s*", raw)
    if not match:
        return "Your card's expiration date is incomplete."
    month, year = int(match.group(1)), int(match.group(2))
    if year < 100:
        year += 2000
    if not 1 <= month <= 12:
        return "Your card's expiration month is invalid."
    now = time.gmtime()
    if (year, month) < (now.tm_year, now.tm_mon):
        return "Your card's expiration year is in the past."
    return month, year


def pay(sb: Sandbox, ctx: Context, session_id: str, form: Params) -> PageOutcome:
    """A person pressed Pay on the hosted page with a (test) card."""
    session = sb.store.get("checkout.session", session_id, ctx.account)
    expire_if_due(sb, session)
    if session["status"] == "complete":
        return PageOutcome(redirect=success_url(session) or f"/checkout/{session_id}")
    if session["status"] != "open":
        return PageOutcome(error="This Checkout Session has expired.", status_code=410)

    number = (form.text("card_number") or "").strip()
    if not number:
        return PageOutcome(error="Your card number is incomplete.", status_code=400)
    exp_month = exp_year = None
    if form.text("exp"):
        expiry = _expiry(form.text("exp") or "")
        if isinstance(expiry, str):
            return PageOutcome(error=expiry, status_code=400)
        exp_month, exp_year = expiry
    cvc = form.text("cvc")
    if cvc is not None and not re.fullmatch(r"\d{3,4}", cvc.strip()):
        return PageOutcome(error="Your card's security code is incomplete.", status_code=400)
    name = form.text("name")
    if name:
        sb.store.meta(session_id)["cardholder_name"] = name

    pi = _session_intent(sb, ctx, session)
    pm = payment_methods.make(
        sb, ctx, method_for_card_number(number), exp_month=exp_month, exp_year=exp_year, name=name
    )
    try:
        payment_intents.attach_and_confirm(
            sb, ctx, pi, pm, return_url=f"{ctx.base_url}/checkout/{session_id}/return"
        )
    except StripeAPIError as error:
        return PageOutcome(error=error.message, status_code=error.status)
    if pi["status"] == "requires_action":
        return PageOutcome(redirect=pi["next_action"]["redirect_to_url"]["url"])
    return PageOutcome(redirect=success_url(session) or f"/checkout/{session_id}")


def _session_intent(sb: Sandbox, ctx: Context, session: StripeObject) -> StripeObject:
    """The session's PaymentIntent, created at the first payment attempt (as Stripe does)."""
    if session["payment_intent"]:
        pi: StripeObject = sb.store.objects["payment_intent"][session["payment_intent"]]
        return pi
    data: dict[str, Any] = sb.store.meta(session["id"])["payment_intent_data"]
    pi = payment_intents.new_intent(
        sb,
        ctx,
        amount=session["amount_total"],
        currency=session["currency"],
        customer=session["customer"],
        capture_method=data["capture_method"],
        metadata=dict(data["metadata"]),
        description=data["description"],
        payment_method_types=None,
        receipt_email=data["receipt_email"] or session["customer_email"],
    )
    sb.store.meta(pi["id"])["checkout_session"] = session["id"]
    session["payment_intent"] = pi["id"]
    return pi


def after_authentication(sb: Sandbox, session_id: str) -> PageOutcome:
    """Where the 3-D Secure page returns to: the success page, or back to the form."""
    session = sb.store.objects.get("checkout.session", {}).get(session_id)
    if session is None:
        return PageOutcome(error="No such Checkout Session.", status_code=404)
    if session["status"] == "complete":
        return PageOutcome(redirect=success_url(session) or f"/checkout/{session_id}")
    pi = sb.store.objects["payment_intent"].get(session["payment_intent"] or "")
    error = (pi or {}).get("last_payment_error") or {}
    return PageOutcome(
        error=error.get("message", "The payment was not completed."), status_code=402
    )
