"""The pages a buyer sees: a stand-in for Razorpay Checkout (`/checkout/<order_id>`, card or UPI)
and the test-mode mock bank page with Success and Failure. The outcome is handed back as
Checkout does, a form POSTed to `callback_url` with `razorpay_payment_id`, `razorpay_order_id`
and `razorpay_signature` (or `error[...]` fields); without a callback the same fields are shown."""

from __future__ import annotations

import functools
import json
from html import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from razorpay_sandbox import resources
from razorpay_sandbox.errors import RazorpayError
from razorpay_sandbox.state import Entity, RazorpayState, payment_signature
from sandbox_kit.pages import page

_STYLE = """
body { font-family: system-ui, sans-serif; background: #f2f4f8; color: #0d2366; margin: 0; }
main { max-width: 420px; margin: 48px auto; background: #fff; border-radius: 8px;
       box-shadow: 0 2px 12px rgba(0,0,0,.08); padding: 28px; }
.badge { display: inline-block; font-size: 11px; background: #ffe9a8; border-radius: 4px;
         padding: 2px 6px; margin-bottom: 16px; }
.total { font-size: 28px; font-weight: 600; margin: 8px 0 16px; }
label { display: block; font-size: 13px; margin: 12px 0 4px; }
input { width: 100%; box-sizing: border-box; font-size: 16px; padding: 10px;
        border: 1px solid #cfd7df; border-radius: 6px; }
button { width: 100%; margin-top: 16px; padding: 12px; font-size: 16px; border: 0;
         border-radius: 6px; background: #3395ff; color: #fff; cursor: pointer; }
button.fail { background: #e74c3c; }
.error { background: #fde8e8; color: #9b1c1c; border-radius: 6px; padding: 10px; }
.hint { font-size: 12px; color: #5a6a85; margin-top: 16px; line-height: 1.5; }
"""


# Every page of this sandbox: the kit's frame in its style.
_page = functools.partial(page, style=_STYLE, sandbox="Razorpay sandbox")


def _state(request: Request) -> RazorpayState:
    st: RazorpayState = request.app.state.sandbox
    return st


def _money(amount: int, currency: str) -> str:
    return f"{amount / 100:,.2f} {currency}"


def _checkout_form(order: Entity, callback_url: str, error: str | None = None) -> str:
    oid = escape(order["id"])
    cards = "".join(f"<div><code>{n}</code></div>" for n in resources.TEST_CARDS)
    problem = f"<div class='error' role='alert'>{escape(error)}</div>" if error else ""
    return f"""
<h1>Pay</h1><div class='total'>{_money(order["amount_due"], order["currency"])}</div>{problem}
<form method='post' action='/checkout/{oid}/pay'>
  <input type='hidden' name='method' value='card'>
  <input type='hidden' name='callback_url' value='{escape(callback_url)}'>
  <label for='card_number'>Card number</label><input id='card_number' name='card_number' required>
  <label for='expiry'>Expiry</label><input id='expiry' name='expiry' placeholder='MM / YY'>
  <label for='cvv'>CVV</label><input id='cvv' name='cvv'>
  <button type='submit'>Pay by card</button>
</form>
<form method='post' action='/checkout/{oid}/pay'>
  <input type='hidden' name='method' value='upi'>
  <input type='hidden' name='callback_url' value='{escape(callback_url)}'>
  <label for='vpa'>UPI ID</label><input id='vpa' name='vpa' placeholder='{resources.UPI_SUCCESS}'>
  <button type='submit'>Pay by UPI</button>
</form>
<div class='hint'>Test cards (any future expiry, any CVV) go to the mock bank page:{cards}
UPI: <code>{resources.UPI_SUCCESS}</code> pays, <code>{resources.UPI_FAILURE}</code> fails.</div>"""


def _result(st: RazorpayState, payment: Entity) -> HTMLResponse:
    """The fields Checkout hands to the merchant, auto-posted to callback_url when there is one."""
    order_id = payment["order_id"]
    if payment["status"] in ("authorized", "captured"):
        fields = {
            "razorpay_payment_id": payment["id"],
            "razorpay_order_id": order_id,
            "razorpay_signature": payment_signature(st.config.key_secret, order_id, payment["id"]),
        }
        title = "Payment successful"
    else:
        fields = {
            "error[code]": payment["error_code"] or "BAD_REQUEST_ERROR",
            "error[description]": payment["error_description"] or "Payment failed",
            "error[source]": payment["error_source"] or "customer",
            "error[step]": payment["error_step"] or "payment_authentication",
            "error[reason]": payment["error_reason"] or "payment_failed",
            "error[metadata]": json.dumps({"payment_id": payment["id"], "order_id": order_id}),
        }
        title = "Payment failed"
    callback = st.facts(payment["id"]).get("callback_url") or ""
    inputs = "".join(
        f"<input type='hidden' name='{escape(k)}' value='{escape(v)}'>" for k, v in fields.items()
    )
    submit = "<script>document.forms[0].submit()</script>" if callback else ""
    body = (
        f"<h1>{title}</h1><form method='post' action='{escape(callback)}'>{inputs}"
        f"<button type='submit'>Continue</button></form>{submit}"
    )
    return _page(title, body)


async def checkout_page(request: Request) -> Response:
    st = _state(request)
    async with st.kit.lock:
        order = st.entities.get("order", {}).get(request.path_params["order_id"])
        if order is None:
            return _page("Not found", "<p class='error'>No such order.</p>", 404)
        if order["status"] == "paid":
            return _page("Paid", "<p>This order is already paid.</p>")
        callback = request.query_params.get("callback_url", "")
        return _page("Checkout", _checkout_form(order, callback))


async def pay(request: Request) -> Response:
    st = _state(request)
    form = {k: str(v) for k, v in (await request.form()).items()}
    method = form.get("method", "card")
    async with st.kit.lock:
        order = st.entities.get("order", {}).get(request.path_params["order_id"])
        if order is None:
            return _page("Not found", "<p class='error'>No such order.</p>", 404)
        try:
            payment = resources.start_payment(st, order, method, form)
        except RazorpayError as error:
            return _page(
                "Checkout",
                _checkout_form(order, form.get("callback_url", ""), error.description),
                400,
            )
        st.facts(payment["id"])["callback_url"] = form.get("callback_url") or None
        if method == "upi" and payment["vpa"] == resources.UPI_SUCCESS:
            resources.authorize(st, payment)
            return _result(st, payment)
        if method == "upi" and payment["vpa"] == resources.UPI_FAILURE:
            resources.fail(
                st,
                payment,
                "Payment was unsuccessful as the UPI request was declined.",
                "payment_declined",
            )
            return _result(st, payment)
        if method == "card" and not st.facts(payment["id"]).get("test_card"):
            resources.fail(
                st,
                payment,
                "The card issuer is invalid. Use a test card in test mode.",
                "card_issuer_invalid",
                "bank",
            )
            return _result(st, payment)
    # The payment stays `created` (pending) until the buyer decides on the bank page.
    return RedirectResponse(f"/checkout/payments/{payment['id']}/bank", status_code=303)


async def bank_page(request: Request) -> Response:
    st = _state(request)
    async with st.kit.lock:
        payment = st.entities.get("payment", {}).get(request.path_params["payment_id"])
        if payment is None:
            return _page("Not found", "<p class='error'>No such payment.</p>", 404)
        if payment["status"] != "created":
            return _result(st, payment)
        pid = escape(payment["id"])
        body = f"""
<h1>Mock bank</h1><div class='total'>{_money(payment["amount"], payment["currency"])}</div>
<form method='post' action='/checkout/payments/{pid}/bank'>
  <label for='otp'>OTP (4 to 10 digits pays, fewer fails)</label><input id='otp' name='otp'>
  <button type='submit' name='action' value='success'>Success</button>
  <button type='submit' name='action' value='failure' class='fail'>Failure</button>
</form>"""
        return _page("Mock bank", body)


async def bank_submit(request: Request) -> Response:
    st = _state(request)
    form = {k: str(v) for k, v in (await request.form()).items()}
    async with st.kit.lock:
        payment = st.entities.get("payment", {}).get(request.path_params["payment_id"])
        if payment is None:
            return _page("Not found", "<p class='error'>No such payment.</p>", 404)
        if payment["status"] == "created":
            decide(st, payment, form.get("action", ""), form.get("otp", ""))
        return _result(st, payment)


def decide(st: RazorpayState, payment: Entity, action: str, otp: str = "") -> None:
    """The mock bank's answer: Success (with an OTP of 4-10 digits, if one is given) or not."""
    otp = otp.strip()
    good_otp = not otp or (otp.isdigit() and 4 <= len(otp) <= 10)
    if action == "success" and good_otp:
        resources.authorize(st, payment)
    elif action == "success":
        resources.fail(
            st, payment, "Payment failed because the OTP entered was incorrect.", "incorrect_otp"
        )
    else:
        resources.fail(
            st,
            payment,
            "Payment processing failed because of incorrect authentication.",
            "authentication_failed",
        )


def routes() -> list[BaseRoute]:
    return [
        Route("/checkout/{order_id}", checkout_page, methods=["GET"]),
        Route("/checkout/{order_id}/pay", pay, methods=["POST"]),
        Route("/checkout/payments/{payment_id}/bank", bank_page, methods=["GET"]),
        Route("/checkout/payments/{payment_id}/bank", bank_submit, methods=["POST"]),
    ]
