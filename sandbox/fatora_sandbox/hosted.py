"""Fatora's hosted checkout page (`/pay/MCPaymentPage?paymentID=...`): the buyer pays with a
test card or cancels, then is redirected to the merchant's `success_url` or `failure_url` with
`order_id` and `transaction_id` (and `status`) in the query."""

from __future__ import annotations

import functools
from html import escape
from urllib.parse import urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from fatora_sandbox.state import EXPIRY_OUTCOMES, TEST_CARDS, FatoraState, Payment, to_major
from sandbox_kit.pages import page

_STYLE = """
body { font-family: system-ui, sans-serif; background: #f4f6f9; color: #1c2b4a; margin: 0; }
main { max-width: 420px; margin: 48px auto; background: #fff; border-radius: 8px;
       box-shadow: 0 2px 12px rgba(0,0,0,.08); padding: 28px; }
.badge { display: inline-block; font-size: 11px; background: #ffe9a8; border-radius: 4px;
         padding: 2px 6px; margin-bottom: 16px; }
.total { font-size: 28px; font-weight: 600; margin: 8px 0 16px; }
label { display: block; font-size: 13px; margin: 12px 0 4px; }
input { width: 100%; box-sizing: border-box; font-size: 16px; padding: 10px;
        border: 1px solid #cfd7df; border-radius: 6px; }
button { width: 100%; margin-top: 16px; padding: 12px; font-size: 16px; border: 0;
         border-radius: 6px; background: #6a1b9a; color: #fff; cursor: pointer; }
button.secondary { background: #e6e9ee; color: #1c2b4a; }
.hint { font-size: 12px; color: #5a6a85; margin-top: 16px; line-height: 1.5; }
"""


# Every page of this sandbox: the kit's frame in its style.
_page = functools.partial(page, style=_STYLE, sandbox="Fatora sandbox")


def _state(request: Request) -> FatoraState:
    st: FatoraState = request.app.state.sandbox
    return st


def _with_query(url: str, extra: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(extra)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def back_to_merchant(payment: Payment) -> str:
    """Where the buyer goes after the page: success_url for SUCCESS, failure_url otherwise."""
    query = {"order_id": payment["order_id"], "status": payment["payment_status"]}
    if payment["transaction_id"]:
        query["transaction_id"] = payment["transaction_id"]
    if payment["card_token"]:
        query["card_token"] = payment["card_token"]
    target = (
        payment["success_url"] if payment["payment_status"] == "SUCCESS" else payment["failure_url"]
    )
    return _with_query(target, query)


async def payment_page(request: Request) -> Response:
    st = _state(request)
    async with st.kit.lock:
        payment = st.payments.get(request.query_params.get("paymentID", ""))
        if payment is None:
            return _page("Not found", "<p>No such payment.</p>", 404)
        if payment["payment_status"] != "CREATED":
            return _page("Fatora", f"<p>This payment is {escape(payment['payment_status'])}.</p>")
        pid = escape(payment["payment_id"])
        amount = f"{to_major(payment['minor'], payment['currency'])} {payment['currency']}"
        cards = ", ".join(f"<code>{c}</code>" for c in sorted(TEST_CARDS))
        outcomes = "".join(
            f"<div><code>{e}</code> {escape(o[1])}</div>" for e, o in EXPIRY_OUTCOMES.items()
        )
        body = f"""
<h1>Pay</h1><div class='total'>{escape(amount)}</div>
<form method='post' action='/pay/{pid}/pay'>
  <label for='card_number'>Card number</label><input id='card_number' name='card_number' required>
  <label for='expiry'>Expiry (MM/YY)</label><input id='expiry' name='expiry' required>
  <label for='cvv'>CVV</label><input id='cvv' name='cvv'>
  <button type='submit'>Pay</button>
</form>
<form method='post' action='/pay/{pid}/cancel'><button class='secondary'>Cancel</button></form>
<div class='hint'>Test cards: {cards}. The expiry date decides:{outcomes}</div>"""
        return _page("Fatora checkout", body)


async def pay(request: Request) -> Response:
    st = _state(request)
    form = await request.form()
    async with st.kit.lock:
        payment = st.payments.get(request.path_params["payment_id"])
        if payment is None:
            return _page("Not found", "<p>No such payment.</p>", 404)
        if payment["payment_status"] == "CREATED":
            st.pay(payment, str(form.get("card_number", "")), str(form.get("expiry", "")))
        if payment["payment_status"] == "PENDING":
            return _page("Pending", "<p>Your payment is being processed by the bank.</p>", 202)
        return RedirectResponse(back_to_merchant(payment), status_code=303)


async def cancel(request: Request) -> Response:
    """The buyer gave up: back to failure_url; the checkout stays usable and nothing is sent."""
    st = _state(request)
    async with st.kit.lock:
        payment = st.payments.get(request.path_params["payment_id"])
        if payment is None:
            return _page("Not found", "<p>No such payment.</p>", 404)
        target = _with_query(
            payment["failure_url"], {"order_id": payment["order_id"], "status": "CANCELED"}
        )
    return RedirectResponse(target, status_code=303)


def routes() -> list[BaseRoute]:
    return [
        Route("/pay/MCPaymentPage", payment_page, methods=["GET"]),
        Route("/pay/{payment_id}/pay", pay, methods=["POST"]),
        Route("/pay/{payment_id}/cancel", cancel, methods=["GET", "POST"]),
    ]
