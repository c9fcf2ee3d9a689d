"""PaymentIntents and their Charges: Stripe's statuses and transitions, declines, 3-D Secure,
bank debits that settle later, manual capture (partial too) and cancellation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stripe_sandbox import ids
from stripe_sandbox.cards import (
    AUTHENTICATION_FAILED,
    BANK_DEBIT_FAILED,
    Decline,
    Outcome,
)
from stripe_sandbox.errors import (
    StripeAPIError,
    invalid_request,
    missing_param,
    unexpected_state,
)
from stripe_sandbox.params import Params, merge_metadata
from stripe_sandbox.resources import payment_methods
from stripe_sandbox.store import Context, StripeObject

if TYPE_CHECKING:
    from stripe_sandbox.runtime import Sandbox

CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action")
CANCELABLE = (
    "requires_payment_method",
    "requires_capture",
    "requires_confirmation",
    "requires_action",
)
CAPTURE_METHODS = ("automatic", "automatic_async", "manual")
CANCELLATION_REASONS = ("duplicate", "fraudulent", "requested_by_customer", "abandoned")

# Smallest chargeable amount per currency, in minor units (Stripe's minimums).
MINIMUM_AMOUNTS = {
    "usd": 50, "eur": 50, "gbp": 30, "cad": 50, "aud": 50, "nzd": 50, "chf": 50, "sgd": 50,
    "jpy": 50, "hkd": 400, "sek": 300, "nok": 300, "dkk": 250, "pln": 200, "mxn": 1000,
    "brl": 50, "inr": 50,
}  # fmt: skip
MAXIMUM_AMOUNT = 99_999_999

AUTHENTICATION_REQUIRED = Decline(
    "authentication_required",
    "authentication_required",
    "Your card was declined. This transaction requires authentication.",
)


# -- helpers ---------------------------------------------------------------------------------


def check_amount(amount: int, currency: str, param: str = "amount") -> None:
    """Stripe's bounds on a charge amount."""
    minimum = MINIMUM_AMOUNTS.get(currency, 1)
    if amount < minimum:
        raise invalid_request(
            f"Amount must be at least {minimum} {currency} (in the currency's minor unit)",
            code="amount_too_small",
            param=param,
        )
    if amount > MAXIMUM_AMOUNT:
        raise invalid_request(
            f"Amount must be no more than {MAXIMUM_AMOUNT} (in the currency's minor unit)",
            code="amount_too_large",
            param=param,
        )


def _pi_error_extra(pi: StripeObject) -> dict[str, Any]:
    return {"payment_intent": pi}


def _state_error(
    action: str, done: str, pi: StripeObject, allowed: tuple[str, ...]
) -> StripeAPIError:
    return unexpected_state(
        f"You cannot {action} this PaymentIntent because it has a status of {pi['status']}. "
        f"Only a PaymentIntent with one of the following statuses may be {done}: "
        f"{', '.join(allowed)}.",
        extra=_pi_error_extra(pi),
    )


def _customer_param(sb: Sandbox, ctx: Context, p: Params) -> str | None:
    customer = p.text("customer")
    if customer is not None:
        sb.store.get("customer", customer, ctx.account, param="customer")
    return customer


def _new_charge(sb: Sandbox, pi: StripeObject, pm: StripeObject, status: str) -> StripeObject:
    charge: StripeObject = {
        "id": ids.new_id("ch"),
        "object": "charge",
        "amount": pi["amount"],
        "amount_captured": 0,
        "amount_refunded": 0,
        "balance_transaction": None,
        "billing_details": pm["billing_details"],
        "captured": False,
        "created": sb.store.now(),
        "currency": pi["currency"],
        "customer": pi["customer"],
        "description": pi["description"],
        "disputed": False,
        "failure_code": None,
        "failure_message": None,
        "livemode": False,
        "metadata": dict(pi["metadata"]),
        "outcome": None,
        "paid": False,
        "payment_intent": pi["id"],
        "payment_method": pm["id"],
        "payment_method_details": payment_methods.details(pm),
        "receipt_email": pi["receipt_email"],
        "receipt_url": None,
        "refunded": False,
        "status": status,
    }
    sb.store.add("charge", charge, sb.store.owner.get(pi["id"]))
    pi["latest_charge"] = charge["id"]
    return charge


def _approve_charge(charge: StripeObject, capture: bool) -> None:
    charge["status"] = "succeeded"
    charge["paid"] = True
    charge["captured"] = capture
    charge["amount_captured"] = charge["amount"] if capture else 0
    charge["outcome"] = {
        "network_status": "approved_by_network",
        "reason": None,
        "risk_level": "normal",
        "seller_message": "Payment complete.",
        "type": "authorized",
    }


def _is_manual(pi: StripeObject) -> bool:
    return bool(pi["capture_method"] == "manual")


def _dispute_if_test_card(
    sb: Sandbox, ctx: Context | None, pi: StripeObject, charge: StripeObject
) -> None:
    """A charge captured with a dispute test card is disputed at once (test mode's way)."""
    owner = sb.store.owner.get(pi["id"])
    pm = sb.store.get("payment_method", pi["payment_method"], owner)
    method = payment_methods.test_method_of(sb, pm)
    if method.dispute_reason:
        from stripe_sandbox.resources import disputes

        disputes.open_dispute(sb, ctx, charge, reason=method.dispute_reason, inquiry=method.inquiry)


# -- state transitions -----------------------------------------------------------------------


def _succeed(sb: Sandbox, ctx: Context | None, pi: StripeObject, charge: StripeObject) -> None:
    """The payment is authorized: captured now, or held for a manual capture."""
    manual = _is_manual(pi)
    _approve_charge(charge, capture=not manual)
    pi["last_payment_error"] = None
    pi["next_action"] = None
    pi["processing"] = None
    sb.store.emit("charge.succeeded", charge, ctx)
    if manual:
        pi["status"] = "requires_capture"
        pi["amount_capturable"] = pi["amount"]
        sb.store.emit("payment_intent.amount_capturable_updated", pi, ctx)
    else:
        pi["status"] = "succeeded"
        pi["amount_received"] = pi["amount"]
        sb.store.emit("payment_intent.succeeded", pi, ctx)
    from stripe_sandbox.resources import checkout  # checkout also drives payment intents

    checkout.payment_authorized(sb, ctx, pi)
    if not manual:
        _dispute_if_test_card(sb, ctx, pi, charge)


def _fail(
    sb: Sandbox,
    ctx: Context | None,
    pi: StripeObject,
    pm: StripeObject,
    decline: Decline,
    *,
    error_type: str = "card_error",
    charge: StripeObject | None = None,
) -> StripeAPIError:
    """The payment failed: back to requires_payment_method with `last_payment_error`.

    Returns the error to answer (402 for card errors) with the intent as it now is.
    """
    if charge is not None:
        charge["status"] = "failed"
        charge["failure_code"] = decline.code
        charge["failure_message"] = decline.message
        charge["outcome"] = {
            "network_status": "declined_by_network",
            "reason": decline.decline_code or decline.code,
            "risk_level": "normal",
            "seller_message": "The bank did not return any further details with this decline.",
            "type": "issuer_declined",
        }
        sb.store.emit("charge.failed", charge, ctx)
    error = StripeAPIError(
        decline.message,
        status=402 if error_type == "card_error" else 400,
        type=error_type,
        code=decline.code,
        decline_code=decline.decline_code,
        param=decline.param,
        extra={"payment_method": pm, **({"charge": charge["id"]} if charge else {})},
    )
    pi["status"] = "requires_payment_method"
    pi["payment_method"] = None
    pi["next_action"] = None
    pi["processing"] = None
    pi["last_payment_error"] = error.body()["error"]
    sb.store.emit("payment_intent.payment_failed", pi, ctx)
    error.extra["payment_intent"] = pi
    return error


def _check_compatible(pm: StripeObject, allowed: list[str] | None, manual: bool) -> None:
    """Refuse a payment method the intent cannot use (its types, manual capture)."""
    if allowed and pm["type"] not in allowed:
        raise invalid_request(
            f"The PaymentMethod provided ({pm['type']}) is not allowed for this PaymentIntent. "
            f"Please attach a PaymentMethod of one of the following types: {', '.join(allowed)}.",
            code="payment_intent_incompatible_payment_method",
            param="payment_method",
        )
    if pm["type"] != "card" and manual:
        raise invalid_request(
            f"The PaymentMethod type {pm['type']} does not support capture_method=manual.",
            code="payment_intent_invalid_parameter",
            param="capture_method",
        )


def _confirm(
    sb: Sandbox, ctx: Context, pi: StripeObject, off_session: bool = False
) -> StripeObject:
    """Run the payment with the intent's payment method; raises the decline as a card error."""
    if pi["payment_method"] is None:
        raise unexpected_state(
            "You cannot confirm this PaymentIntent because it's missing a payment method. "
            "You can either update the PaymentIntent with a payment method and then confirm it "
            "again, or confirm it again directly with a payment method.",
            extra=_pi_error_extra(pi),
        )
    pm = sb.store.get("payment_method", pi["payment_method"], sb.store.owner.get(pi["id"]))
    method = payment_methods.test_method_of(sb, pm)
    _check_compatible(pm, sb.store.meta(pi["id"]).get("explicit_types"), manual=_is_manual(pi))
    if pm["type"] not in pi["payment_method_types"]:
        pi["payment_method_types"].append(pm["type"])

    if method.outcome is Outcome.SUCCEED:
        _succeed(sb, ctx, pi, _new_charge(sb, pi, pm, "pending"))
    elif method.outcome is Outcome.DECLINE:
        assert method.decline is not None
        charge = _new_charge(sb, pi, pm, "failed")
        raise _fail(sb, ctx, pi, pm, method.decline, charge=charge)
    elif method.outcome is Outcome.AUTHENTICATE:
        if off_session:
            charge = _new_charge(sb, pi, pm, "failed")
            raise _fail(sb, ctx, pi, pm, AUTHENTICATION_REQUIRED, charge=charge)
        pi["status"] = "requires_action"
        pi["next_action"] = {
            "type": "redirect_to_url",
            "redirect_to_url": {
                "url": f"{ctx.base_url}/3ds/{pi['id']}",
                "return_url": sb.store.meta(pi["id"]).get("return_url"),
            },
        }
        sb.store.emit("payment_intent.requires_action", pi, ctx)
    else:  # a bank debit: submitted now, settled later
        charge = _new_charge(sb, pi, pm, "pending")
        pi["status"] = "processing"
        pi["processing"] = {"type": pm["type"]}
        sb.store.emit("charge.pending", charge, ctx)
        sb.store.emit("payment_intent.processing", pi, ctx)
        if sb.config.settle_after is not None:
            pi_id = pi["id"]
            sb.background.call_later(
                sb.config.settle_after,
                lambda: _auto_settle(sb, pi_id),
                name=f"settle {pi_id}",
            )
    return pi


def _auto_settle(sb: Sandbox, pi_id: str) -> None:
    pi = sb.store.objects.get("payment_intent", {}).get(pi_id)
    if pi is not None and pi["status"] == "processing":
        settle(sb, None, pi, "succeeded")


# -- API operations --------------------------------------------------------------------------


def new_intent(
    sb: Sandbox,
    ctx: Context,
    *,
    amount: int,
    currency: str,
    customer: str | None = None,
    capture_method: str = "automatic_async",
    metadata: dict[str, str] | None = None,
    description: str | None = None,
    payment_method_types: list[str] | None = None,
    receipt_email: str | None = None,
) -> StripeObject:
    """A new PaymentIntent in requires_payment_method (emits payment_intent.created)."""
    pi_id = ids.new_id("pi")
    pi: StripeObject = {
        "id": pi_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": 0,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": None,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": capture_method,
        "client_secret": ids.client_secret(pi_id),
        "confirmation_method": "automatic",
        "created": sb.store.now(),
        "currency": currency,
        "customer": customer,
        "description": description,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": metadata or {},
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": None,
        "payment_method_options": {},
        "payment_method_types": list(payment_method_types or ["card"]),
        "processing": None,
        "receipt_email": receipt_email,
        "setup_future_usage": None,
        "shipping": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "requires_payment_method",
        "transfer_data": None,
        "transfer_group": None,
    }
    sb.store.add("payment_intent", pi, ctx.account)
    if payment_method_types:
        sb.store.meta(pi_id)["explicit_types"] = list(payment_method_types)
    sb.store.emit("payment_intent.created", pi, ctx)
    return pi


def attach_and_confirm(
    sb: Sandbox,
    ctx: Context,
    pi: StripeObject,
    pm: StripeObject | None,
    return_url: str | None,
    off_session: bool = False,
) -> StripeObject:
    """Set the payment method (if given) and confirm, as `POST .../confirm` does."""
    if pi["status"] not in CONFIRMABLE:
        raise _state_error("confirm", "confirmed", pi, CONFIRMABLE)
    if pm is not None:
        pi["payment_method"] = pm["id"]
    if return_url is not None:
        sb.store.meta(pi["id"])["return_url"] = return_url
    return _confirm(sb, ctx, pi, off_session)


def create(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    amount = p.integer("amount", required=True)
    currency = p.currency("currency", required=True)
    assert amount is not None and currency is not None
    capture_method = p.enum("capture_method", CAPTURE_METHODS, default="automatic_async")
    customer = _customer_param(sb, ctx, p)
    pm_id = p.text("payment_method")
    confirm = p.boolean("confirm")
    return_url = p.text("return_url")
    off_session = p.boolean("off_session")
    metadata = p.metadata()
    check_amount(amount, currency)
    if confirm and not pm_id:
        raise missing_param("payment_method")
    pm = payment_methods.resolve(sb, ctx, pm_id) if pm_id else None
    types = p.strings("payment_method_types") or None
    if pm is not None and confirm:  # refused before anything is created, as Stripe does
        _check_compatible(pm, types, manual=capture_method == "manual")

    pi = new_intent(
        sb,
        ctx,
        amount=amount,
        currency=currency,
        customer=customer,
        capture_method=capture_method or "automatic_async",
        metadata=metadata,
        description=p.text("description"),
        payment_method_types=types,
        receipt_email=p.text("receipt_email"),
    )
    for name in ("statement_descriptor", "statement_descriptor_suffix", "transfer_group"):
        pi[name] = p.text(name)
    automatic = p.sub("automatic_payment_methods")
    if "enabled" in automatic:
        pi["automatic_payment_methods"] = {
            "allow_redirects": automatic.enum(
                "allow_redirects", ("always", "never"), default="always"
            ),
            "enabled": automatic.boolean("enabled"),
        }
    if return_url is not None:
        sb.store.meta(pi["id"])["return_url"] = return_url
    if pm is not None:
        pi["payment_method"] = pm["id"]
        pi["status"] = "requires_confirmation"
    if confirm:
        return _confirm(sb, ctx, pi, off_session)
    return pi


def retrieve(sb: Sandbox, ctx: Context, p: Params, intent: str) -> StripeObject:
    return sb.store.get("payment_intent", intent, ctx.account)


def update(sb: Sandbox, ctx: Context, p: Params, intent: str) -> StripeObject:
    pi = sb.store.get("payment_intent", intent, ctx.account)
    changes_payment = any(
        name in p for name in ("amount", "currency", "customer", "payment_method", "capture_method")
    )
    if changes_payment and pi["status"] not in CONFIRMABLE:
        raise unexpected_state(
            f"This PaymentIntent's details could not be updated because it has a status of "
            f"{pi['status']}. You may only update the details of a PaymentIntent with one of the "
            f"following statuses: {', '.join(CONFIRMABLE)}.",
            extra=_pi_error_extra(pi),
        )
    amount = p.integer("amount")
    currency = p.currency("currency") or pi["currency"]
    if amount is not None:
        check_amount(amount, currency)
        pi["amount"] = amount
    pi["currency"] = currency
    if "customer" in p:
        pi["customer"] = _customer_param(sb, ctx, p)
    if "capture_method" in p:
        pi["capture_method"] = p.enum("capture_method", CAPTURE_METHODS)
    if "payment_method" in p:
        pm_id = p.text("payment_method")
        pi["payment_method"] = payment_methods.resolve(sb, ctx, pm_id)["id"] if pm_id else None
        pi["status"] = (
            "requires_confirmation" if pi["payment_method"] else "requires_payment_method"
        )
    for name in ("description", "receipt_email", "statement_descriptor", "transfer_group"):
        if name in p:
            pi[name] = p.text(name)
    pi["metadata"] = merge_metadata(pi["metadata"], p.metadata())
    return pi


def confirm(sb: Sandbox, ctx: Context, p: Params, intent: str) -> StripeObject:
    pi = sb.store.get("payment_intent", intent, ctx.account)
    pm_id = p.text("payment_method")
    pm = payment_methods.resolve(sb, ctx, pm_id) if pm_id else None
    return attach_and_confirm(sb, ctx, pi, pm, p.text("return_url"), p.boolean("off_session"))


def capture(sb: Sandbox, ctx: Context, p: Params, intent: str) -> StripeObject:
    pi = sb.store.get("payment_intent", intent, ctx.account)
    if pi["status"] != "requires_capture":
        raise unexpected_state(
            f"This PaymentIntent could not be captured because it has a status of {pi['status']}. "
            "Only a PaymentIntent with one of the following statuses may be captured: "
            "requires_capture.",
            extra=_pi_error_extra(pi),
        )
    capturable = pi["amount_capturable"]
    amount = p.integer("amount_to_capture", minimum=1)
    if amount is None:
        amount = capturable
    if amount > capturable:
        raise invalid_request(
            f"The amount to capture ({amount}) is greater than the amount capturable "
            f"({capturable}) on this PaymentIntent.",
            code="amount_too_large",
            param="amount_to_capture",
        )
    pi["metadata"] = merge_metadata(pi["metadata"], p.metadata())
    charge = sb.store.get("charge", pi["latest_charge"], sb.store.owner.get(pi["id"]))
    charge["captured"] = True
    charge["amount_captured"] = amount
    pi["amount_received"] = amount
    pi["amount_capturable"] = 0
    pi["status"] = "succeeded"
    sb.store.emit("charge.captured", charge, ctx)
    sb.store.emit("payment_intent.succeeded", pi, ctx)
    _dispute_if_test_card(sb, ctx, pi, charge)
    return pi


def cancel(sb: Sandbox, ctx: Context, p: Params, intent: str) -> StripeObject:
    pi = sb.store.get("payment_intent", intent, ctx.account)
    if pi["status"] not in CANCELABLE:
        raise _state_error("cancel", "canceled", pi, CANCELABLE)
    void(sb, ctx, pi, p.enum("cancellation_reason", CANCELLATION_REASONS))
    return pi


def void(sb: Sandbox, ctx: Context | None, pi: StripeObject, reason: str | None) -> None:
    """Cancel an intent in a cancelable status, releasing any authorization."""
    if pi["status"] == "requires_capture" and pi["latest_charge"]:
        # Voiding the authorization releases the held amount.
        charge = sb.store.get("charge", pi["latest_charge"], sb.store.owner.get(pi["id"]))
        charge["refunded"] = True
        charge["amount_refunded"] = charge["amount"]
    pi["status"] = "canceled"
    pi["canceled_at"] = sb.store.now()
    pi["cancellation_reason"] = reason
    pi["amount_capturable"] = 0
    pi["next_action"] = None
    sb.store.emit("payment_intent.canceled", pi, ctx)


def list_(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    customer = p.text("customer")
    return sb.store.list(
        "payment_intent",
        p,
        "/v1/payment_intents",
        ctx.account,
        where=lambda pi: customer is None or pi["customer"] == customer,
    )


# -- completions driven by people and admins -------------------------------------------------


def authenticate(sb: Sandbox, ctx: Context | None, pi: StripeObject, approve: bool) -> None:
    """The 3-D Secure challenge was completed (`approve`) or failed."""
    if pi["status"] != "requires_action":
        raise _state_error("authenticate", "authenticated", pi, ("requires_action",))
    owner = sb.store.owner.get(pi["id"])
    pm = sb.store.get("payment_method", pi["payment_method"], owner)
    if approve:
        _succeed(sb, ctx, pi, _new_charge(sb, pi, pm, "pending"))
    else:
        _fail(sb, ctx, pi, pm, AUTHENTICATION_FAILED, error_type="invalid_request_error")


def settle(
    sb: Sandbox,
    ctx: Context | None,
    pi: StripeObject,
    outcome: str,
    failure_code: str | None = None,
    failure_message: str | None = None,
) -> None:
    """A bank debit in processing clears (`succeeded`) or bounces (`failed`)."""
    if pi["status"] != "processing":
        raise _state_error("settle", "settled", pi, ("processing",))
    owner = sb.store.owner.get(pi["id"])
    charge = sb.store.get("charge", pi["latest_charge"], owner)
    if outcome == "succeeded":
        _succeed(sb, ctx, pi, charge)
        return
    pm = sb.store.get("payment_method", pi["payment_method"], owner)
    decline = Decline(
        failure_code or BANK_DEBIT_FAILED.code,
        None,
        failure_message or BANK_DEBIT_FAILED.message,
    )
    _fail(sb, ctx, pi, pm, decline, charge=charge)


# -- charges ---------------------------------------------------------------------------------


def retrieve_charge(sb: Sandbox, ctx: Context, p: Params, charge: str) -> StripeObject:
    return sb.store.get("charge", charge, ctx.account)


def list_charges(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    intent = p.text("payment_intent")
    customer = p.text("customer")
    return sb.store.list(
        "charge",
        p,
        "/v1/charges",
        ctx.account,
        where=lambda c: (
            (intent is None or c["payment_intent"] == intent)
            and (customer is None or c["customer"] == customer)
        ),
    )
