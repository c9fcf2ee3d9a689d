"""HTML of the hosted pages a person sees: Checkout (card form) and the 3-D Secure challenge."""

from __future__ import annotations

from html import escape
from typing import Any

from stripe_sandbox.store import StripeObject

_STYLE = """
body { font-family: system-ui, sans-serif; background: #f6f9fc; color: #1a1f36; margin: 0; }
main { max-width: 420px; margin: 48px auto; background: #fff; border-radius: 8px;
       box-shadow: 0 2px 12px rgba(0,0,0,.08); padding: 28px; }
h1 { font-size: 20px; margin: 0 0 4px; }
.badge { display: inline-block; font-size: 11px; background: #ffde92; color: #663c00;
         border-radius: 4px; padding: 2px 6px; margin-bottom: 16px; }
.total { font-size: 28px; font-weight: 600; margin: 8px 0 16px; }
table { width: 100%; border-collapse: collapse; margin-bottom: 16px; font-size: 14px; }
td { padding: 4px 0; } td.amount { text-align: right; }
label { display: block; font-size: 13px; margin: 12px 0 4px; color: #3c4257; }
input { width: 100%; box-sizing: border-box; font-size: 16px; padding: 10px;
        border: 1px solid #cfd7df; border-radius: 6px; }
.row { display: flex; gap: 12px; } .row > div { flex: 1; }
button { width: 100%; margin-top: 20px; padding: 12px; font-size: 16px; border: 0;
         border-radius: 6px; background: #635bff; color: #fff; cursor: pointer; }
button.secondary { background: #e3e8ee; color: #1a1f36; }
.error { background: #fde8e8; color: #9b1c1c; border-radius: 6px; padding: 10px;
         margin: 12px 0; font-size: 14px; }
.hint { font-size: 12px; color: #697386; margin-top: 16px; line-height: 1.5; }
a { color: #635bff; }
"""

_TEST_CARDS = (
    ("4242 4242 4242 4242", "succeeds"),
    ("4000 0000 0000 0002", "declined (generic_decline)"),
    ("4000 0000 0000 9995", "declined (insufficient_funds)"),
    ("4000 0000 0000 0119", "processing_error"),
    ("4000 0000 0000 0069", "expired_card"),
    ("4000 0000 0000 0127", "incorrect_cvc"),
    ("4000 0000 0000 3220", "asks for 3-D Secure"),
)


def money(amount: int, currency: str) -> str:
    """An amount in minor units shown in major units (two decimals, except zero-decimal)."""
    if currency.lower() in {"jpy", "krw", "vnd", "clp", "xof", "xaf", "ugx", "pyg", "rwf"}:
        return f"{amount:,} {currency.upper()}"
    return f"{amount / 100:,.2f} {currency.upper()}"


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )


def _error(message: str | None) -> str:
    return f"<div class='error' role='alert'>{escape(message)}</div>" if message else ""


def checkout_page(
    session: StripeObject, line_items: list[dict[str, Any]], error: str | None = None
) -> str:
    """The payment form of an open session, or its final state."""
    sid = escape(session["id"])
    total = money(session["amount_total"], session["currency"])
    rows = "".join(
        f"<tr><td>{escape(item['description'])} &times; {item['quantity']}</td>"
        f"<td class='amount'>{money(item['amount_total'], item['currency'])}</td></tr>"
        for item in line_items
    )
    head = (
        "<span class='badge'>TEST MODE &middot; Stripe sandbox</span>"
        f"<h1>Pay</h1><div class='total'>{total}</div><table>{rows}</table>"
    )
    if session["status"] == "complete":
        return _page("Paid", head + "<p>This payment is complete. Thank you!</p>")
    if session["status"] == "expired":
        return _page("Expired", head + _error("This Checkout Session has expired."))
    email = session.get("customer_email") or ""
    cards = "".join(f"<div><code>{n}</code> {escape(what)}</div>" for n, what in _TEST_CARDS)
    form = f"""
<form method="post" action="/checkout/{sid}/pay">
  {_error(error)}
  {f"<label>Email</label><input value='{escape(email)}' disabled>" if email else ""}
  <label for="card_number">Card number</label>
  <input id="card_number" name="card_number" inputmode="numeric" autocomplete="cc-number"
         placeholder="4242 4242 4242 4242" required>
  <div class="row">
    <div><label for="exp">Expiry</label>
      <input id="exp" name="exp" placeholder="MM / YY" autocomplete="cc-exp" required></div>
    <div><label for="cvc">CVC</label>
      <input id="cvc" name="cvc" placeholder="123" inputmode="numeric" autocomplete="cc-csc"
             required></div>
  </div>
  <label for="name">Name on card</label>
  <input id="name" name="name" autocomplete="cc-name">
  <button type="submit">Pay {total}</button>
</form>
<p><a href="/checkout/{sid}/cancel">Cancel and return</a></p>
<div class="hint">Test cards (any future expiry, any CVC):{cards}</div>
"""
    return _page("Checkout", head + form)


def three_ds_page(pi: StripeObject) -> str:
    """The issuer's challenge: complete or fail the authentication."""
    pid = escape(pi["id"])
    if pi["status"] != "requires_action":
        body = f"<p>Nothing to authenticate: this payment is {escape(pi['status'])}.</p>"
        return _page("3-D Secure", body)
    body = f"""
<span class='badge'>TEST MODE &middot; 3-D Secure 2</span>
<h1>Confirm this payment</h1>
<div class='total'>{money(pi["amount"], pi["currency"])}</div>
<p>Your bank asks you to confirm this payment. In the sandbox, choose the outcome.</p>
<form method="post" action="/3ds/{pid}">
  <button type="submit" name="action" value="approve">Complete authentication</button>
  <button type="submit" name="action" value="fail" class="secondary">Fail authentication</button>
</form>
"""
    return _page("3-D Secure", body)


def message_page(title: str, message: str, link: str | None = None, error: bool = False) -> str:
    text = _error(message) if error else f"<p>{escape(message)}</p>"
    more = f"<p><a href='{escape(link)}'>Continue</a></p>" if link else ""
    return _page(title, f"<h1>{escape(title)}</h1>{text}{more}")
