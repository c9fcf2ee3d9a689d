"""The shared Payment API (seed 004): subscribe, verify, hosted-checkout cancel, Stripe webhooks."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterable
from typing import Annotated

from fastapi import APIRouter, Form, Header, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from gateway.adapters.backends import Backends
from gateway.api import convert, models
from gateway.api.backend_errors import api_error_from_remote
from gateway.api.errors import ApiError, error_responses, forbidden, not_found, validation_failed
from gateway.api.redirects import Origin, is_allowed_redirect
from gateway.entrypoints.deps import AnyUser, BackendsDep, check_redirects, read_raw_body
from gateway.entrypoints.observability import WEBHOOKS
from gateway.service_layer.idempotency import optional_key, scoped_request_id
from hirepay.payments.v1 import payments_service_pb2 as pay_pb
from hirepay_platform.errors import ErrorKind, RemoteError
from hirepay_platform.ids import new_id

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
    if body.paymentMethod == "PAYPAL":
        raise validation_failed({"paymentMethod": "PAYPAL is not supported yet; use STRIPE"})
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
    """Status, amount and subscription dates; only for the transaction's owner or an admin."""
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
    return convert.verify_to_http(txn)


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
async def stripe_webhook(request: Request, backends: BackendsDep) -> models.WebhookAck:
    """Forwards the raw body and the `Stripe-Signature` header, byte for byte, to payments, which
    verifies and applies the event once. 400: bad or stale signature (nothing applied);
    503: not applicable yet, deliver again later. No bearer token: the signature is the auth."""
    try:
        ack = await _forward_webhook(request, backends)
    except ApiError as exc:
        WEBHOOKS.labels("stripe", str(exc.status)).inc()
        if exc.status == 400:
            log.warning("webhook refused", extra={"fields": {"reason": exc.error}})
        raise
    WEBHOOKS.labels("stripe", "200").inc()
    return ack


async def _forward_webhook(request: Request, backends: Backends) -> models.WebhookAck:
    settings = request.app.state.settings
    payload = await read_raw_body(request, settings.max_body_bytes)
    signature = request.headers.get("stripe-signature", "")
    if not signature:
        raise ApiError(400, "INVALID_SIGNATURE", "The Stripe-Signature header is missing")
    try:
        response = await backends.payments.handle_provider_event(
            pay_pb.HandleProviderEventRequest(
                provider="stripe", payload=payload, signature=signature
            )
        )
    except RemoteError as exc:
        raise api_error_from_remote(exc) from None
    return models.WebhookAck(received=True, duplicate=response.duplicate)
