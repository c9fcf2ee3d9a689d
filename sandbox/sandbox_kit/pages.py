"""The frame of every kit sandbox's hosted page (PayPal's approval page, Razorpay's checkout and
mock bank, Fatora's payment page): one HTML document in the sandbox's own style, marked as a
test-mode page of that sandbox. Plain HTML, so tests can drive the pages with an HTTP client."""

from __future__ import annotations

from html import escape

from starlette.responses import HTMLResponse


def page(title: str, body: str, status: int = 200, *, style: str, sandbox: str) -> HTMLResponse:
    """`body` (HTML) under a TEST MODE badge naming `sandbox`, styled by the CSS `style`."""
    html = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{style}</style></head><body><main>"
        f"<span class='badge'>TEST MODE &middot; {sandbox}</span>{body}</main></body></html>"
    )
    return HTMLResponse(html, status_code=status)
