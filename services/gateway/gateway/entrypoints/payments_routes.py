"""The shared Payment API (seed 004): subscribe, verify, hosted-checkout cancel and return, and every
provider's webhooks."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterable
from typing import Annotated, Literal, get_args

from fastapi import APIRouter, Form, Header, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from gateway.adapters.backends import Backends
from gateway.api import convert, models
from gateway.api.backend_errors import api_error_from_remote
from gateway.api.errors import ApiError, error_responses, forbidden, not_found, validation_failed
from gateway.api.redirects import Origin, is_allowed_redirect
from gateway.entrypoints.deps import AnyUser, BackendsDep, check_redirects, read_raw_body
from gateway.entrypoints.direct_routes import DirectRoute, JsonAnswer
from gateway.entrypoints.observability import WEBHOOKS
from gateway.service_layer.idempotency import optional_key, scoped_request_id
from hirepay.payments.v1 import payments_service_pb2 as pay_pb
from hirepay_platform.errors import ErrorKind, RemoteError
from hirepay_platform.ids import new_id
from hirepay_platform.metrics import child, count, incrementer

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/payments", tags=["payments"])

_USER_TYPE_OF_ROLE = {"company": "COMPANY", "applicant": "APPLICANT"}


@router.post(
    "/subscribe",
    response_model=models.SubscribeOut,
    summary="Start a premium subscription (API-1)",
    responses=error_responses(400, 401, 403, 409, 502, 503, 504),
)
async def subscribe(
    request: Request,
    body: models.SubscribeIn,
    principal: AnyUser,
    backends: BackendsDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> models.SubscribeOut:
    """Creates a PENDING transaction and a hosted checkout; pay at `checkoutUrl`.

    `userId` must be the caller (admins may act for anyone) and `userType` must fit the role.
    An optional `Idempotency-Key` makes retries return the same transaction.
    """
    if not principal.is_admin:
        expected = _USER_TYPE_OF_ROLE.get(principal.role)
        if expected is None:
            raise forbidden("Only companies and applicants can subscribe")
        if body.userType != expected:
            raise forbidden(f"userType must be {expected} for your account")
        if body.userId != principal.user_id:
            raise forbidden("userId must be your own user id")
    check_redirects(request, {"returnUrl": body.returnUrl, "cancelUrl": body.cancelUrl})
    key = optional_key(idempotency_key)
    request_id = scoped_request_id(body.userId, "subscribe", key) if key else new_id("sub")
    response = await backends.payments.subscribe(convert.subscribe_to_proto(body, request_id))
    return convert.subscribe_to_http(response.transaction)


@router.get(
    "/verify/{transaction_id}",
    response_model=models.VerifyOut,
    summary="Read a transaction (API-2)",
    responses=error_responses(401, 404, 503, 504),
)
async def verify(
    transaction_id: Annotated[str, Path(min_length=1, max_length=200)],
    principal: AnyUser,
    backends: BackendsDep,
) -> models.VerifyOut:
    """Status, amount, subscription dates and the purchase's card disputes; only for the
    transaction's owner or an admin."""
    try:
        response = await backends.payments.get_transaction(
            pay_pb.GetTransactionRequest(transaction_id=transaction_id)
        )
    except RemoteError as exc:
        if exc.kind == ErrorKind.NOT_FOUND:
            raise not_found("transaction") from None
        raise
    txn = response.transaction
    # Someone else's transaction is answered exactly like a missing one (SEC-2).
    if not principal.owns(txn.user_id):
        raise not_found("transaction")
    return convert.verify_to_http(txn, response.disputes)


CheckoutRef = Annotated[
    str,
    Query(
        min_length=5,
        max_length=200,
        pattern=r"^(txn|pay)_[A-Za-z0-9_-]+$",
        description="The transaction (txn_...) or payment (pay_...) whose checkout is cancelled.",
    ),
]


@router.get(
    "/checkout/cancel",
    summary="The customer left the hosted checkout page: ask them to confirm the cancellation",
    response_class=HTMLResponse,
    responses={200: {"description": "A confirmation page (HTML); nothing is changed yet"}}
    | error_responses(400),
)
async def checkout_cancel_page(request: Request, ref: CheckoutRef) -> HTMLResponse:
    """Where the provider sends a customer who cancels. A GET changes nothing (a link preview, a
    crawler or a stranger holding the ref cannot cancel anyone's payment): the page posts the
    cancellation back here."""
    _subject_of(ref)
    origins = request.app.state.settings.redirect_origins()
    return HTMLResponse(_confirm_page(ref), headers={"Content-Security-Policy": _page_csp(origins)})


@router.post(
    "/checkout/cancel",
    status_code=303,
    summary="Cancel the hosted checkout (the confirmation page's form)",
    responses={
        303: {"description": "Redirect to the cancel URL given at subscribe time"},
        200: {"description": "Cancelled; the stored cancel URL is not an allowed redirect"},
    }
    | error_responses(400, 404, 409, 502, 503, 504),
)
async def cancel_checkout(
    request: Request, ref: Annotated[str, Form(min_length=5, max_length=200)], backends: BackendsDep
) -> Response:
    """Settles the transaction (or the job payment) as cancelled, once: a repeat changes nothing
    and redirects again. The redirect goes only to an allowed origin (no open redirect)."""
    subject = _subject_of(ref)
    request_id = f"cancel_{ref}"
    response = await backends.payments.cancel_checkout(
        pay_pb.CancelCheckoutRequest(request_id=request_id, **{subject: ref})
    )
    url = response.redirect_url
    if url and is_allowed_redirect(url, request.app.state.settings.redirect_origins()):
        return RedirectResponse(url, status_code=303)
    status = (
        convert.subscribe_to_http(response.transaction).status
        if response.HasField("transaction")
        else "CANCELLED"
    )
    return JSONResponse({"cancelled": True, "ref": ref, "status": status})


def _subject_of(ref: str) -> str:
    """The CancelCheckoutRequest field a ref names."""
    if _REF.fullmatch(ref) is None:
        raise validation_failed({"ref": "must be a transaction (txn_...) or payment (pay_...) id"})
    return "transaction_id" if ref.startswith("txn_") else "payment_id"


_REF = re.compile(r"(txn|pay)_[A-Za-z0-9_-]+")


def _page_csp(origins: Iterable[Origin]) -> str:
    """The page has no script; its one form posts back here, and the answer redirects to an
    allowed origin (browsers check form-action on that redirect too)."""
    targets = " ".join(sorted(f"{scheme}://{host}:{port}" for scheme, host, port in origins))
    return (
        f"default-src 'none'; style-src 'unsafe-inline'; form-action 'self' {targets}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )


def _confirm_page(ref: str) -> str:
    value = html.escape(ref, quote=True)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Cancel payment</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:sans-serif;max-width:32rem;margin:4rem auto}}</style></head>
<body><h1>Cancel this payment?</h1>
<p>Nothing has been charged. Confirm to cancel the checkout and go back.</p>
<form method="post" action="/api/payments/checkout/cancel">
<input type="hidden" name="ref" value="{value}">
<button type="submit">Cancel payment</button>
</form></body></html>
"""


# Providers whose webhooks and returns are accepted here (payments says which are configured).
Provider = Literal["stripe", "paypal", "razorpay", "fatora"]
# Headers each provider signs with or names its events by; only these are forwarded.
_SIGNING_HEADERS = (
    "stripe-signature",
    "paypal-transmission-id",
    "paypal-transmission-time",
    "paypal-transmission-sig",
    "paypal-cert-url",
    "paypal-auth-algo",
    "x-razorpay-signature",
    "x-razorpay-event-id",
    "x-fatora-signature",
    "x-fatora-event-id",
)


def _signing_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The provider's signing headers of a delivery (a repeated one: its first value), in one pass
    over the request's headers (ASGI names them in lowercase)."""
    found: dict[str, str] = {}
    for raw_name, raw_value in raw:
        # Matched as bytes: only a signing header's name and value are decoded, not every name
        # of every delivery (issue 13).
        if raw_name in _SIGNING_HEADER_NAMES:
            name = _SIGNING_HEADER_NAMES[raw_name]
            if name not in found:
                found[name] = raw_value.decode("latin-1")
    return found


# A signing header's name as ASGI gives it (latin-1 bytes) -> the name payments is sent.
_SIGNING_HEADER_NAMES = {name.encode("latin-1"): name for name in _SIGNING_HEADERS}


@router.post(
    "/webhook/stripe",
    response_model=models.WebhookAck,
    summary="Stripe webhook deliveries (API-3)",
    responses=error_responses(400, 413, 502, 503, 504),
    # The body is read raw (the signature covers its exact bytes), so document it by hand.
    openapi_extra={
        "parameters": [
            {
                "name": "Stripe-Signature",
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
                "description": "t=<unix time>,v1=<HMAC-SHA256 of 't.body'>[,v1=...]",
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
            "description": "A Stripe event, exactly as Stripe sent it.",
        },
    },
)
async def stripe_webhook(request: Request, backends: BackendsDep) -> Response:
    """Stripe's deliveries (its documented address, kept): as `/webhook/{provider}`."""
    return await provider_webhook("stripe", request, backends)


@router.post(
    "/webhook/{provider}",
    response_model=models.WebhookAck,
    summary="Provider webhook deliveries (API-1, API-3)",
    responses=error_responses(400, 413, 503),
    # The body is read raw (the signature covers its exact bytes), so document it by hand.
    openapi_extra={
        "parameters": [
            {
                "name": "Stripe-Signature",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "Stripe: t=<unix time>,v1=<HMAC-SHA256 of 't.body'>[,v1=...]; "
                "PayPal: PAYPAL-TRANSMISSION-*; Razorpay: X-Razorpay-Signature; "
                "Fatora: X-Fatora-Signature",
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
            "description": "The provider's event, exactly as it sent it.",
        },
    },
)
async def provider_webhook(provider: Provider, request: Request, backends: BackendsDep) -> Response:
    """Forwards the raw body and the provider's signing headers, byte for byte, to payments,
    which verifies the delivery the provider's own way and applies the event once. 400: bad or
    stale signature (nothing applied), or a provider not offered (`PROVIDER_NOT_AVAILABLE`);
    503: not applicable yet, deliver again later. No bearer token: the signature is the auth."""
    try:
        duplicate = await _forward_webhook(provider, request, backends)
    except ApiError as exc:
        count(WEBHOOKS, provider, str(exc.status))
        if exc.status == 400:
            log.warning("webhook refused", extra={"fields": {"reason": exc.error}})
        raise
    _RELAYED[provider]()
    # The bytes FastAPI's response_model would write, made once for each answer (_ACKS).
    return JsonAnswer(_ACKS[duplicate])


# Each provider's relayed deliveries (200) counted in one call, the series made at start-up: a
# count() is two calls more per delivery (issue 13: two deliveries per card posting).
_RELAYED = {
    provider: incrementer(child(WEBHOOKS, provider, "200")) for provider in get_args(Provider)
}

# The two answers a relayed delivery gets, as WebhookAck writes them: made once, not a model
# validated and dumped per delivery (issue 13: two deliveries per card posting).
_ACKS = {
    duplicate: models.WebhookAck(received=True, duplicate=duplicate).model_dump_json().encode()
    for duplicate in (False, True)
}


async def webhook_directly(request: Request, provider: Provider) -> Response:
    """provider_webhook without FastAPI's per-request machinery (direct_routes.py): it takes no
    body model, header or token, so every delivery to a provider's address is answered here."""
    return await provider_webhook(provider, request, request.scope["app"].state.backends)


# Every provider's deliveries are answered directly (issue 13): Stripe's at its own address (its
# route comes first, so `/webhook/stripe` is never `/webhook/{provider}`), the others at theirs.
DIRECT = (
    DirectRoute(stripe_webhook, webhook_directly, {"provider": "stripe"}),
    *(
        DirectRoute(provider_webhook, webhook_directly, {"provider": provider})
        for provider in get_args(Provider)
        if provider != "stripe"
    ),
)


async def _forward_webhook(provider: str, request: Request, backends: Backends) -> bool:
    """Relay the delivery to payments; whether payments had applied it already (a duplicate)."""
    settings = request.scope["app"].state.settings
    payload = await read_raw_body(request, settings.max_body_bytes)
    headers = _signing_headers(request.scope["headers"])
    if not headers:
        raise ApiError(400, "INVALID_SIGNATURE", "The delivery carries no signature header")
    relayed = pay_pb.HandleProviderEventRequest(
        provider=provider, payload=payload, signature=headers.get("stripe-signature", "")
    )
    # Put one by one: a map given to the constructor is filled by MutableMapping.update, in
    # Python (about 5 calls per delivery; issue 13).
    for name, value in headers.items():
        relayed.headers[name] = value
    try:
        response = await backends.payments.handle_provider_event(relayed)
    except RemoteError as exc:
        raise api_error_from_remote(exc) from None
    return response.duplicate


@router.api_route(
    "/return/{provider}",
    methods=["GET", "POST"],
    summary="A customer back from a provider's page (Razorpay's callback, Fatora's redirect)",
    responses={303: {"description": "Redirect to the caller's return or cancel URL"}}
    | error_responses(400, 404, 502, 503, 504),
)
async def provider_return(provider: Provider, request: Request, backends: BackendsDep) -> Response:
    """The provider hands the outcome back here (query or form fields); payments verifies them
    the provider's way (Razorpay: `razorpay_signature`; a forged one is `400 INVALID_SIGNATURE`
    and changes nothing), settles from the provider's own view, and the customer is redirected
    (a browser form post or redirect) or answered the transaction as JSON."""
    return await _confirm_return(provider, request, backends)


@router.post(
    "/razorpay/verify",
    summary="Verify a Razorpay Checkout payment (order id, payment id, signature)",
    responses=error_responses(400, 404, 502, 503, 504),
)
async def razorpay_verify(request: Request, backends: BackendsDep) -> Response:
    """`{razorpay_order_id, razorpay_payment_id, razorpay_signature}` as Checkout.js hands them
    to the client (JSON or form): a valid signature settles the order's transaction from
    Razorpay's view; a forged one is `400 INVALID_SIGNATURE` and changes nothing."""
    return await _confirm_return("razorpay", request, backends)


async def _confirm_return(provider: str, request: Request, backends: Backends) -> Response:
    params = {k: v for k, v in request.query_params.items()}
    is_form = False
    if request.method == "POST":
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            try:
                body = await request.json()
            except ValueError:
                raise validation_failed({"body": "is not JSON"}) from None
            if not isinstance(body, dict):
                raise validation_failed({"body": "must be a JSON object"})
            params.update({str(k): str(v) for k, v in body.items()})
        else:
            is_form = True
            form = await request.form()
            params.update({k: str(v) for k, v in form.items()})
    try:
        response = await backends.payments.confirm_checkout_return(
            pay_pb.ConfirmCheckoutReturnRequest(provider=provider, params=params)
        )
    except RemoteError as exc:
        raise api_error_from_remote(exc) from None
    url = response.redirect_url
    wants_page = request.method == "GET" or is_form
    allowed = request.app.state.settings.redirect_origins()
    if wants_page and url and is_allowed_redirect(url, allowed):  # never an open redirect
        return RedirectResponse(url, status_code=303)
    if response.HasField("transaction"):
        return JSONResponse(convert.verify_to_http(response.transaction).model_dump(mode="json"))
    return JSONResponse({"payment_id": response.payment.id, "redirect_url": url})
