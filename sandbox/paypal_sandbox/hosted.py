"""The buyer's approval page (`/checkoutnow?token=<order>`), PayPal's hosted checkout in
miniature: choose how the sandbox buyer pays, then approve or cancel. Plain HTML forms, so
tests can drive it with an HTTP client."""

from __future__ import annotations

import functools
from html import escape
from urllib.parse import urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from paypal_sandbox import orders
from paypal_sandbox.errors import PayPalError
from paypal_sandbox.state import PayPalObject, PayPalState
from sandbox_kit.pages import page

_STYLE = """
body { font-family: system-ui, sans-serif; background: #f5f7fa; color: #001435; margin: 0; }
main { max-width: 420px; margin: 48px auto; background: #fff; border-radius: 12px;
       box-shadow: 0 2px 12px rgba(0,0,0,.08); padding: 28px; }
.badge { display: inline-block; font-size: 11px; background: #ffd140; border-radius: 4px;
         padding: 2px 6px; margin-bottom: 16px; }
.total { font-size: 28px; font-weight: 600; margin: 8px 0 16px; }
label { display: block; margin: 8px 0; font-size: 14px; }
button { width: 100%; margin-top: 16px; padding: 12px; font-size: 16px; border: 0;
         border-radius: 24px; background: #0070e0; color: #fff; cursor: pointer; }
button.secondary { background: #e6e9ee; color: #001435; }
.error { background: #fde8e8; color: #9b1c1c; border-radius: 6px; padding: 10px; }
"""


# Every page of this sandbox: the kit's frame in its style.
_page = functools.partial(page, style=_STYLE, sandbox="PayPal sandbox")


def _state(request: Request) -> PayPalState:
    st: PayPalState = request.app.state.sandbox
    return st


def _order(st: PayPalState, order_id: str) -> PayPalObject | None:
    return st.objects.get("order", {}).get(order_id)


def _with_query(url: str, extra: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(extra)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _total(order: PayPalObject) -> str:
    amounts = [u["amount"] for u in order["purchase_units"]]
    return ", ".join(f"{a['value']} {a['currency_code']}" for a in amounts)


async def approval_page(request: Request) -> Response:
    st = _state(request)
    order_id = request.query_params.get("token", "")
    async with st.kit.lock:
        order = _order(st, order_id)
        if order is None:
            return _page("Not found", "<p class='error'>No such order.</p>", 404)
        if order["status"] not in ("CREATED", "PAYER_ACTION_REQUIRED"):
            return _page("PayPal", f"<p>This order is {escape(order['status'])}.</p>")
        choices = "".join(
            f"<label><input type='radio' name='funding' value='{k}'{' checked' if k == 'balance' else ''}> "
            f"<b>{k}</b>: {escape(v)}</label>"
            for k, v in orders.FUNDING.items()
        )
        oid = escape(order_id)
        body = f"""
<h1>Pay with PayPal</h1><div class='total'>{escape(_total(order))}</div>
<form method='post' action='/checkoutnow/{oid}/approve'>
  <p>Sandbox buyer <code>sb-buyer@personal.example.com</code> pays with:</p>{choices}
  <button type='submit'>Continue (approve)</button>
</form>
<form method='post' action='/checkoutnow/{oid}/cancel'>
  <button type='submit' class='secondary'>Cancel and return to merchant</button>
</form>"""
        return _page("Pay with PayPal", body)


async def approve(request: Request) -> Response:
    st = _state(request)
    form = await request.form()
    funding = str(form.get("funding") or "balance")
    order_id = request.path_params["order_id"]
    async with st.kit.lock:
        order = _order(st, order_id)
        if order is None:
            return _page("Not found", "<p class='error'>No such order.</p>", 404)
        st.base_url = st.kit.base_url(request)
        try:
            orders.approve(st, order, funding, st.base_url)
        except PayPalError as error:
            return _page("PayPal", f"<p class='error'>{escape(str(error))}</p>", error.status)
        return_url = st.facts(order_id).get("return_url")
        payer_id = order["payer"]["payer_id"]
    if return_url:
        return RedirectResponse(
            _with_query(return_url, {"token": order_id, "PayerID": payer_id}), 303
        )
    return _page("Approved", f"<p>Order {escape(order_id)} approved. You can close this page.</p>")


async def cancel(request: Request) -> Response:
    """The buyer gave up: back to cancel_url; the order stays as it was and nothing is emitted."""
    st = _state(request)
    order_id = request.path_params["order_id"]
    async with st.kit.lock:
        if _order(st, order_id) is None:
            return _page("Not found", "<p class='error'>No such order.</p>", 404)
        cancel_url = st.facts(order_id).get("cancel_url")
    if cancel_url:
        return RedirectResponse(_with_query(cancel_url, {"token": order_id}), 303)
    return _page("Canceled", "<p>You canceled this payment.</p>")


def routes() -> list[BaseRoute]:
    return [
        Route("/checkoutnow", approval_page, methods=["GET"]),
        Route("/checkoutnow/{order_id}/approve", approve, methods=["POST"]),
        Route("/checkoutnow/{order_id}/cancel", cancel, methods=["GET", "POST"]),
    ]
