"""The pages a person visits: hosted Checkout (`/checkout/{id}`), the 3-D Secure challenge
(`/3ds/{pi}`) and Connect onboarding (`/connect/onboarding/{link}`). Plain HTML forms, so a test can drive them with an HTTP client too."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from stripe_sandbox import pages
from stripe_sandbox.api import base_url
from stripe_sandbox.errors import StripeAPIError
from stripe_sandbox.params import Params, parse_form
from stripe_sandbox.resources import checkout, connect, payment_intents
from stripe_sandbox.runtime import Sandbox
from stripe_sandbox.store import Context, StripeObject


def _sandbox(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


def _not_found(what: str) -> HTMLResponse:
    return HTMLResponse(pages.message_page("Not found", f"No such {what}.", error=True), 404)


def _context(request: Request, sb: Sandbox, obj: StripeObject) -> Context:
    return Context(account=sb.store.owner.get(obj["id"]), base_url=base_url(request, sb))


def _render_checkout(
    sb: Sandbox, session: StripeObject, error: str | None = None, status: int = 200
) -> HTMLResponse:
    lines = sb.store.meta(session["id"])["line_items"]
    return HTMLResponse(pages.checkout_page(session, lines, error), status_code=status)


async def checkout_page(request: Request) -> Response:
    sb = _sandbox(request)
    async with sb.store.lock:
        session = sb.store.objects.get("checkout.session", {}).get(request.path_params["session"])
        if session is None:
            return _not_found("Checkout Session")
        checkout.expire_if_due(sb, session)
        return _render_checkout(sb, session)


async def checkout_pay(request: Request) -> Response:
    sb = _sandbox(request)
    form = Params(parse_form((await request.body()).decode()))
    async with sb.store.lock:
        session = sb.store.objects.get("checkout.session", {}).get(request.path_params["session"])
        if session is None:
            return _not_found("Checkout Session")
        try:
            outcome = checkout.pay(sb, _context(request, sb, session), session["id"], form)
        except StripeAPIError as error:
            return _render_checkout(sb, session, error.message, error.status)
        if outcome.redirect:
            return RedirectResponse(outcome.redirect, status_code=303)
        return _render_checkout(sb, session, outcome.error, outcome.status_code)


async def checkout_cancel(request: Request) -> Response:
    """The person gave up: back to cancel_url; the session stays open until it expires."""
    sb = _sandbox(request)
    async with sb.store.lock:
        session = sb.store.objects.get("checkout.session", {}).get(request.path_params["session"])
        if session is None:
            return _not_found("Checkout Session")
        if session["cancel_url"]:
            return RedirectResponse(session["cancel_url"], status_code=303)
        return HTMLResponse(pages.message_page("Payment canceled", "You canceled this payment."))


async def checkout_return(request: Request) -> Response:
    """Where the 3-D Secure challenge sends the person back to."""
    sb = _sandbox(request)
    async with sb.store.lock:
        session = sb.store.objects.get("checkout.session", {}).get(request.path_params["session"])
        if session is None:
            return _not_found("Checkout Session")
        outcome = checkout.after_authentication(sb, session["id"])
        if outcome.redirect:
            return RedirectResponse(outcome.redirect, status_code=303)
        return _render_checkout(sb, session, outcome.error, outcome.status_code)


async def three_ds_page(request: Request) -> Response:
    sb = _sandbox(request)
    async with sb.store.lock:
        pi = sb.store.objects.get("payment_intent", {}).get(request.path_params["intent"])
        if pi is None:
            return _not_found("PaymentIntent")
        return HTMLResponse(pages.three_ds_page(pi))


def _with_query(url: str, extra: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(extra)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


async def three_ds_submit(request: Request) -> Response:
    """Complete or fail the challenge, then go back to the intent's return_url as Stripe does."""
    sb = _sandbox(request)
    form = Params(parse_form((await request.body()).decode()))
    action = form.text("action")
    if action not in ("approve", "fail"):
        return HTMLResponse(
            pages.message_page("3-D Secure", "Choose approve or fail.", error=True), 400
        )
    async with sb.store.lock:
        pi = sb.store.objects.get("payment_intent", {}).get(request.path_params["intent"])
        if pi is None:
            return _not_found("PaymentIntent")
        if pi["status"] == "requires_action":
            payment_intents.authenticate(
                sb, _context(request, sb, pi), pi, approve=action == "approve"
            )
        return_url = sb.store.meta(pi["id"]).get("return_url")
        succeeded = pi["status"] in ("succeeded", "requires_capture", "processing")
        if return_url:
            query = {
                "payment_intent": pi["id"],
                "payment_intent_client_secret": pi["client_secret"],
                "redirect_status": "succeeded" if succeeded else "failed",
            }
            return RedirectResponse(_with_query(return_url, query), status_code=303)
        if succeeded:
            return HTMLResponse(pages.message_page("Authenticated", "Payment authenticated."))
        return HTMLResponse(
            pages.message_page("Authentication failed", "Authentication failed.", error=True), 402
        )


async def onboarding_page(request: Request) -> Response:
    """Connect onboarding: the sandbox asks nothing, so visiting the page completes the account
    and sends the person straight back to the link's `return_url` (a page saying so when there
    is none)."""
    sb = _sandbox(request)
    async with sb.store.lock:
        target = connect.complete_onboarding(sb, request.path_params["link"])
    if target is None:
        return _not_found("account link")
    if target:
        return RedirectResponse(target, status_code=303)
    return HTMLResponse(pages.message_page("Onboarding complete", "The account can be paid out."))


def routes() -> list[BaseRoute]:
    return [
        Route("/checkout/{session}", checkout_page, methods=["GET"]),
        Route("/checkout/{session}/pay", checkout_pay, methods=["POST"]),
        Route("/checkout/{session}/cancel", checkout_cancel, methods=["GET", "POST"]),
        Route("/checkout/{session}/return", checkout_return, methods=["GET"]),
        Route("/3ds/{intent}", three_ds_page, methods=["GET"]),
        Route("/3ds/{intent}", three_ds_submit, methods=["POST"]),
        Route("/connect/onboarding/{link}", onboarding_page, methods=["GET"]),
    ]
