"""Orders v2: create, approve (on the hosted page), authorize, capture and read orders, with
PayPal's statuses, links and business refusals. The caller holds the kit lock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from paypal_sandbox import money
from paypal_sandbox.errors import PayPalError, invalid, missing, unprocessable
from paypal_sandbox.state import PayPalObject, PayPalState, paypal_id
from sandbox_kit.jsondata import copy_json

# How the buyer's funding behaves once approved, chosen on the approval page.
FUNDING = {
    "balance": "PayPal balance: authorizations and captures succeed",
    "declined": "the funding instrument is declined: 422 INSTRUMENT_DECLINED, approve again",
    "denied": "the capture is created DECLINED (PAYMENT.CAPTURE.DENIED)",
    "pending": "the capture stays PENDING (PENDING_REVIEW) until settled",
}
AUTHORIZATION_DAYS = 29  # honor period 3 days, valid 29 days
MAX_PURCHASE_UNITS = 10


@dataclass(frozen=True)
class Call:
    """One API request as the operations see it."""

    base: str  # the sandbox's own base URL, for links
    body: dict[str, Any] = field(default_factory=dict)
    mock: str | None = None  # PayPal-Mock-Response `mock_application_codes`


def order_links(st: PayPalState, order: PayPalObject, base: str) -> list[dict[str, str]]:
    oid = order["id"]
    links = [{"href": f"{base}/v2/checkout/orders/{oid}", "rel": "self", "method": "GET"}]
    if order["status"] in ("CREATED", "PAYER_ACTION_REQUIRED"):
        rel = "payer-action" if order["status"] == "PAYER_ACTION_REQUIRED" else "approve"
        links.append({"href": f"{base}/checkoutnow?token={oid}", "rel": rel, "method": "GET"})
    if order["status"] in ("CREATED", "PAYER_ACTION_REQUIRED", "APPROVED"):
        links.append(
            {"href": f"{base}/v2/checkout/orders/{oid}", "rel": "update", "method": "PATCH"}
        )
        action = "capture" if order["intent"] == "CAPTURE" else "authorize"
        links.append(
            {"href": f"{base}/v2/checkout/orders/{oid}/{action}", "rel": action, "method": "POST"}
        )
    return links


def _return_urls(body: dict[str, Any]) -> tuple[str | None, str | None, bool]:
    """(return_url, cancel_url, payer action asked through payment_source.paypal)."""
    source = body.get("payment_source") or {}
    paypal = source.get("paypal") if isinstance(source, dict) else None
    if isinstance(paypal, dict):
        context = paypal.get("experience_context") or {}
        return context.get("return_url"), context.get("cancel_url"), True
    context = body.get("application_context") or {}
    return context.get("return_url"), context.get("cancel_url"), False


def _purchase_unit(unit: Any, index: int) -> PayPalObject:
    where = f"/purchase_units/@reference_id=='{index}'"
    if not isinstance(unit, dict):
        raise missing(where)
    minor, currency = money.parse_amount(unit.get("amount"), f"{where}/amount")
    result: PayPalObject = {
        "reference_id": unit.get("reference_id") or "default",
        "amount": money.amount(minor, currency),
        "payee": {
            "email_address": "merchant@hirepay.example.com",
            "merchant_id": "HIREPAYSANDBOX1",
        },
    }
    for key in ("description", "custom_id", "invoice_id", "soft_descriptor"):
        if unit.get(key) is not None:
            result[key] = unit[key]
    return result


def create(st: PayPalState, call: Call) -> PayPalObject:
    body = call.body
    intent = body.get("intent")
    if intent is None:
        raise missing("/intent")
    if intent not in ("CAPTURE", "AUTHORIZE"):
        raise invalid(
            "/intent", "INVALID_PARAMETER_VALUE", "The value of a field is invalid.", str(intent)
        )
    units = body.get("purchase_units")
    if not isinstance(units, list) or not units:
        raise missing("/purchase_units")
    if len(units) > MAX_PURCHASE_UNITS:
        raise invalid(
            "/purchase_units",
            "INVALID_ARRAY_MAX_ITEMS",
            "The number of items in an array parameter is too large.",
        )
    purchase_units = [_purchase_unit(unit, index) for index, unit in enumerate(units)]
    references = [u["reference_id"] for u in purchase_units]
    if len(set(references)) != len(references):
        raise invalid(
            "/purchase_units",
            "DUPLICATE_REFERENCE_ID",
            "`reference_id` must be unique if multiple `purchase_unit` are provided.",
        )
    return_url, cancel_url, payer_action = _return_urls(body)
    now = st.kit.clock.iso()
    order: PayPalObject = {
        "id": paypal_id(),
        "intent": intent,
        "status": "PAYER_ACTION_REQUIRED" if payer_action else "CREATED",
        "purchase_units": purchase_units,
        "create_time": now,
    }
    if payer_action:
        order["payment_source"] = {"paypal": {}}
    order["links"] = order_links(st, order, call.base)
    st.add("order", order)
    st.facts(order["id"]).update(return_url=return_url, cancel_url=cancel_url)
    return order


def retrieve(st: PayPalState, order_id: str) -> PayPalObject:
    return st.get("order", order_id, "order_id")


def approve(st: PayPalState, order: PayPalObject, funding: str, base: str) -> PayPalObject:
    """The buyer approves on the hosted page (or through the admin API)."""
    if order["status"] not in ("CREATED", "PAYER_ACTION_REQUIRED", "APPROVED"):
        raise unprocessable("ORDER_CANNOT_BE_APPROVED", f"The order is {order['status']}.")
    if funding not in FUNDING:
        raise invalid(
            "/funding",
            "INVALID_PARAMETER_VALUE",
            f"funding must be one of {sorted(FUNDING)}.",
            funding,
        )
    facts = st.facts(order["id"])
    payer_id = facts.setdefault("payer_id", paypal_id()[:13])
    payer = {
        "name": {"given_name": "Sandbox", "surname": "Buyer"},
        "email_address": "sb-buyer@personal.example.com",
        "payer_id": payer_id,
        "address": {"country_code": "US"},
    }
    facts["funding"] = funding
    order["status"] = "APPROVED"
    order["payer"] = payer
    order["payment_source"] = {
        "paypal": {
            "email_address": payer["email_address"],
            "account_id": payer_id,
            "account_status": "VERIFIED",
            "name": payer["name"],
            "address": payer["address"],
        }
    }
    order["update_time"] = st.kit.clock.iso()
    order["links"] = order_links(st, order, base)
    st.emit("CHECKOUT.ORDER.APPROVED", "order", order, "An order has been approved by buyer")
    return order


def _ready(st: PayPalState, order: PayPalObject, action: str, call: Call) -> str:
    """Refuse what PayPal refuses before authorizing or capturing; returns the funding."""
    if call.mock:
        raise unprocessable(call.mock, f"Mocked negative-testing response: {call.mock}.")
    if (order["intent"] == "CAPTURE") != (action == "capture"):
        raise unprocessable(
            "ACTION_DOES_NOT_MATCH_INTENT",
            f"Order was created with an intent to '{order['intent']}'. Please use "
            f"v2/checkout/orders/{{id}}/{order['intent'].lower()} instead.",
        )
    if order["status"] == "COMPLETED":
        issue = "ORDER_ALREADY_CAPTURED" if action == "capture" else "ORDER_ALREADY_AUTHORIZED"
        raise unprocessable(issue, f"Order already {action}d.")
    if order["status"] != "APPROVED":
        raise unprocessable(
            "ORDER_NOT_APPROVED",
            "Payer has not yet approved the Order for payment. Please redirect the payer to the "
            "'rel':'approve' url returned as part of the HATEOAS links within the Create Order call "
            "or provide a valid payment_source in the request.",
        )
    funding = st.facts(order["id"]).get("funding", "balance")
    if funding == "declined":
        # PayPal's documented recovery: send the buyer back to approve with other funding.
        order["status"] = "CREATED"
        order["links"] = order_links(st, order, call.base)
        raise unprocessable(
            "INSTRUMENT_DECLINED",
            "The instrument presented was either declined by the processor or bank, or it can't be "
            "used for this payment.",
            links=[
                {
                    "href": f"{call.base}/checkoutnow?token={order['id']}",
                    "rel": "redirect",
                    "method": "GET",
                }
            ],
        )
    return str(funding)


def _seller_breakdown(minor: int, currency: str) -> dict[str, Any]:
    fee = money.fee(minor)
    return {
        "gross_amount": money.amount(minor, currency),
        "paypal_fee": money.amount(fee, currency),
        "net_amount": money.amount(minor - fee, currency),
    }


def new_capture(
    st: PayPalState,
    minor: int,
    currency: str,
    funding: str,
    up: str,
    base: str,
    *,
    final: bool = True,
    invoice_id: str | None = None,
    custom_id: str | None = None,
    related: dict[str, str] | None = None,
) -> PayPalObject:
    """A capture in the status the buyer's funding gives, with its event."""
    now = st.kit.clock.iso()
    cid = paypal_id()
    status = {"pending": "PENDING", "denied": "DECLINED"}.get(funding, "COMPLETED")
    capture: PayPalObject = {
        "id": cid,
        "status": status,
        "amount": money.amount(minor, currency),
        "final_capture": final,
        "seller_protection": {
            "status": "ELIGIBLE",
            "dispute_categories": ["ITEM_NOT_RECEIVED", "UNAUTHORIZED_TRANSACTION"],
        },
        "create_time": now,
        "update_time": now,
        "links": [
            {"href": f"{base}/v2/payments/captures/{cid}", "rel": "self", "method": "GET"},
            {
                "href": f"{base}/v2/payments/captures/{cid}/refund",
                "rel": "refund",
                "method": "POST",
            },
            {"href": up, "rel": "up", "method": "GET"},
        ],
    }
    if related:
        capture["supplementary_data"] = {"related_ids": dict(related)}
    if invoice_id:
        capture["invoice_id"] = invoice_id
    if custom_id:
        capture["custom_id"] = custom_id
    if status == "PENDING":
        capture["status_details"] = {"reason": "PENDING_REVIEW"}
    elif status == "COMPLETED":
        capture["seller_receivable_breakdown"] = _seller_breakdown(minor, currency)
    st.add("capture", capture)
    st.facts(cid).update(refunded=0, minor=minor, currency=currency)
    event = {
        "COMPLETED": "PAYMENT.CAPTURE.COMPLETED",
        "PENDING": "PAYMENT.CAPTURE.PENDING",
        "DECLINED": "PAYMENT.CAPTURE.DENIED",
    }[status]
    summary = {"COMPLETED": "completed", "PENDING": "pending", "DECLINED": "denied"}[status]
    st.emit(
        event, "capture", capture, f"Payment {summary} for {capture['amount']['value']} {currency}"
    )
    return capture


def capture(st: PayPalState, order_id: str, call: Call) -> PayPalObject:
    order = retrieve(st, order_id)
    funding = _ready(st, order, "capture", call)
    up = f"{call.base}/v2/checkout/orders/{order_id}"
    for unit in order["purchase_units"]:
        minor, currency = money.parse_amount(unit["amount"], "/amount")
        made = new_capture(
            st,
            minor,
            currency,
            funding,
            up,
            call.base,
            invoice_id=unit.get("invoice_id"),
            custom_id=unit.get("custom_id"),
            related={"order_id": order_id},
        )
        unit["payments"] = {"captures": [copy_json(made)]}
        st.link(made["id"], order_id)
    order["status"] = "COMPLETED"
    order["update_time"] = st.kit.clock.iso()
    order["links"] = order_links(st, order, call.base)
    st.emit("CHECKOUT.ORDER.COMPLETED", "order", order, "Checkout Order Completed")
    return order


def authorize(st: PayPalState, order_id: str, call: Call) -> PayPalObject:
    order = retrieve(st, order_id)
    funding = _ready(st, order, "authorize", call)
    now = st.kit.clock.iso()
    expires = st.kit.clock.iso(
        st.kit.clock.time() + timedelta(days=AUTHORIZATION_DAYS).total_seconds()
    )
    for unit in order["purchase_units"]:
        minor, currency = money.parse_amount(unit["amount"], "/amount")
        aid = paypal_id()
        authorization: PayPalObject = {
            "id": aid,
            "status": "CREATED",
            "amount": money.amount(minor, currency),
            "seller_protection": {
                "status": "ELIGIBLE",
                "dispute_categories": ["ITEM_NOT_RECEIVED", "UNAUTHORIZED_TRANSACTION"],
            },
            "expiration_time": expires,
            "create_time": now,
            "update_time": now,
            "links": [
                {
                    "href": f"{call.base}/v2/payments/authorizations/{aid}",
                    "rel": "self",
                    "method": "GET",
                },
                {
                    "href": f"{call.base}/v2/payments/authorizations/{aid}/capture",
                    "rel": "capture",
                    "method": "POST",
                },
                {
                    "href": f"{call.base}/v2/payments/authorizations/{aid}/void",
                    "rel": "void",
                    "method": "POST",
                },
                {
                    "href": f"{call.base}/v2/payments/authorizations/{aid}/reauthorize",
                    "rel": "reauthorize",
                    "method": "POST",
                },
                {
                    "href": f"{call.base}/v2/checkout/orders/{order_id}",
                    "rel": "up",
                    "method": "GET",
                },
            ],
        }
        for key in ("invoice_id", "custom_id"):
            if unit.get(key):
                authorization[key] = unit[key]
        authorization["supplementary_data"] = {"related_ids": {"order_id": order_id}}
        st.add("authorization", authorization)
        st.link(aid, order_id, captured=0, minor=minor, currency=currency, funding=funding)
        unit["payments"] = {"authorizations": [copy_json(authorization)]}
        st.emit(
            "PAYMENT.AUTHORIZATION.CREATED",
            "authorization",
            authorization,
            f"A payment authorization was created for {authorization['amount']['value']} {currency}",
        )
    order["status"] = "COMPLETED"
    order["update_time"] = now
    order["links"] = order_links(st, order, call.base)
    return order


def refresh_order(st: PayPalState, order_id: str | None) -> None:
    """Copy the current authorizations and captures into their order's purchase units."""
    order = st.objects.get("order", {}).get(order_id or "")
    if order is None:
        return
    linked = st.order_objects.get(order["id"], [])
    for unit in order["purchase_units"]:
        payments = unit.get("payments")
        if not payments:
            continue
        for kind, key in (("authorization", "authorizations"), ("capture", "captures")):
            current = _linked(st, linked, kind)
            if current:
                payments[key] = current
        refunds = _linked(st, linked, "refund")
        if refunds:
            payments["refunds"] = refunds


def _linked(st: PayPalState, linked: list[str], kind: str) -> list[PayPalObject]:
    """Copies of the objects of `kind` among an order's, oldest first."""
    objects = st.objects.get(kind, {})
    return [copy_json(objects[object_id]) for object_id in linked if object_id in objects]


def check_mock(call: Call) -> None:
    if call.mock:
        raise PayPalError(422, call.mock, f"Mocked negative-testing response: {call.mock}.")
