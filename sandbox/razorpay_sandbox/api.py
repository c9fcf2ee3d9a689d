"""Razorpay's REST surface (`/v1/orders`, `/v1/payments`, `/v1/refunds`): HTTP basic auth with
the test key pair, JSON bodies, `X-Refund-Idempotency` on refunds and Razorpay-shaped errors."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from razorpay_sandbox import resources
from razorpay_sandbox.errors import RazorpayError, invalid
from razorpay_sandbox.state import Entity, RazorpayState
from sandbox_kit.api import IdempotentRequest, Reply, json_object, perform
from sandbox_kit.idempotency import IdempotencyConflict

Operation = Callable[[RazorpayState, dict[str, Any], dict[str, str], dict[str, str]], Entity]
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_-]{10,}")
MAX_COUNT = 100


def state_of(request: Request) -> RazorpayState:
    st: RazorpayState = request.app.state.sandbox
    return st


def _error_response(error: RazorpayError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


def _authenticate(st: RazorpayState, request: Request) -> RazorpayError | None:
    scheme, _, value = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "basic":
        return RazorpayError("Please provide your api key for authentication purposes.", status=401)
    try:
        key_id, _, secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return RazorpayError("Authentication failed", status=401)
    if key_id != st.config.key_id:
        return RazorpayError("The api key provided is invalid", status=401)
    if secret != st.config.key_secret:
        return RazorpayError("Authentication failed", status=401)
    return None


def _conflict(conflict: IdempotencyConflict) -> Reply:
    if conflict.reason == "mismatch":
        error = RazorpayError(
            "Different request with the same idempotency key has already been processed."
        )
    else:
        error = RazorpayError(
            "A request with the same idempotency key is being processed. Please retry later.",
            status=409,
        )
    return Reply(error.status, json.dumps(error.body()).encode(), keep=False)


def _idempotent(
    st: RazorpayState, request: Request, header: str | None
) -> IdempotentRequest | RazorpayError | None:
    """The request's idempotency key (refunds only, as at Razorpay), or why it is refused."""
    key = request.headers.get(header) if header else None
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(key):
        return invalid(
            "The idempotency key must be at least 10 characters of letters, digits, hyphens "
            "and underscores.",
            header,
        )
    return IdempotentRequest(scope=st.config.key_id, key=key, conflict=_conflict)


def endpoint(
    operation: Operation, *, idempotency_header: str | None = None
) -> Callable[[Request], Any]:
    """An API route: basic auth, JSON body, the idempotency header if any, Razorpay errors."""

    async def handle(request: Request) -> Response:
        st = state_of(request)
        if (denied := _authenticate(st, request)) is not None:
            return _error_response(denied)
        idempotent = _idempotent(st, request, idempotency_header)
        if isinstance(idempotent, RazorpayError):
            return _error_response(idempotent)
        raw = await request.body() if request.method in ("POST", "PATCH") else b""
        body = json_object(raw)
        query = dict(request.query_params)

        def run() -> Reply:
            try:
                if body is None:
                    raise invalid("The request body is not valid JSON.")
                result = operation(st, body, dict(request.path_params), query)
            except RazorpayError as error:
                return Reply(error.status, json.dumps(error.body()).encode(), keep=error.keep)
            return Reply(200, json.dumps(result).encode())

        return await perform(st.kit, request, run, idempotent, raw)

    handle.__name__ = getattr(operation, "__name__", "operation")
    return handle


def _page(items: list[Entity], query: dict[str, str]) -> Entity:
    """Newest first, `count` (≤ 100) after `skip`, optional `from`/`to` unix bounds."""
    try:
        count = min(int(query.get("count", 10)), MAX_COUNT)
        skip = int(query.get("skip", 0))
        low = int(query.get("from", 0))
        high = int(query.get("to", 2**62))
    except ValueError:
        raise invalid("count, skip, from and to must be integers") from None
    chosen = [e for e in reversed(items) if low <= e["created_at"] <= high]
    return resources.collection(chosen[skip : skip + count])


# -- operations -------------------------------------------------------------------------------


def create_order(
    st: RazorpayState, body: dict[str, Any], path: dict[str, str], query: dict[str, str]
) -> Entity:
    return resources.create_order(st, body)


def list_orders(
    st: RazorpayState, body: dict[str, Any], path: dict[str, str], query: dict[str, str]
) -> Entity:
    return _page(st.all("order"), query)


def get_order(
    st: RazorpayState, body: dict[str, Any], path: dict[str, str], query: dict[str, str]
) -> Entity:
    return st.get("order", path["order_id"])


def get_order_payments(
    st: RazorpayState, body: dict[str, Any], path: dict[str, str], query: dict[str, str]
) -> Entity:
    return resources.order_payments(st, path["order_id"])


def list_payments(
    st: RazorpayState, body: dict[str, Any], path: dict[str, str], query: dict[str, str]
) -> Entity:
    return _page(st.all("payment"), query)


def get_payment(
    st: RazorpayState, body: dict[str, Any], path: dict[str, str], query: dict[str, str]
) -> Entity:
    return st.get("payment", path["payment_id"])


def capture_payment(
    st: RazorpayState, body: dict[str, Any], path: dict[str, str], query: dict[str, str]
) -> Entity:
    return resources.capture(st, path["payment_id"], body)


def refund_payment(
    st: RazorpayState, body: dict[str, Any], path: dict[str, str], query: dict[str, str]
) -> Entity:
    return resources.refund(st, path["payment_id"], body)


def get_payment_refunds(
    st: RazorpayState, body: dict[str, Any], path: dict[str, str], query: dict[str, str]
) -> Entity:
    # Paged like every Razorpay list (`count` 10 by default, at most 100, after `skip`).
    return _page(resources.payment_refunds(st, path["payment_id"])["items"], query)


def list_refunds(
    st: RazorpayState, body: dict[str, Any], path: dict[str, str], query: dict[str, str]
) -> Entity:
    return _page(st.all("refund"), query)


def get_refund(
    st: RazorpayState, body: dict[str, Any], path: dict[str, str], query: dict[str, str]
) -> Entity:
    return st.get("refund", path["refund_id"])


def get_dispute(
    st: RazorpayState, body: dict[str, Any], path: dict[str, str], query: dict[str, str]
) -> Entity:
    return st.get("dispute", path["dispute_id"])


async def unknown_url(request: Request) -> Response:
    return _error_response(
        RazorpayError("The requested URL was not found on the server.", status=404)
    )


def routes() -> list[BaseRoute]:
    table: list[tuple[str, str, Operation, str | None]] = [
        ("POST", "/v1/orders", create_order, None),
        ("GET", "/v1/orders", list_orders, None),
        ("GET", "/v1/orders/{order_id}", get_order, None),
        ("GET", "/v1/orders/{order_id}/payments", get_order_payments, None),
        ("GET", "/v1/payments", list_payments, None),
        ("GET", "/v1/payments/{payment_id}", get_payment, None),
        ("POST", "/v1/payments/{payment_id}/capture", capture_payment, None),
        ("POST", "/v1/payments/{payment_id}/refund", refund_payment, "x-refund-idempotency"),
        ("GET", "/v1/payments/{payment_id}/refunds", get_payment_refunds, None),
        ("GET", "/v1/refunds", list_refunds, None),
        ("GET", "/v1/refunds/{refund_id}", get_refund, None),
        ("GET", "/v1/disputes/{dispute_id}", get_dispute, None),
    ]
    result: list[BaseRoute] = [
        Route(path, endpoint(op, idempotency_header=header), methods=[method])
        for method, path, op, header in table
    ]
    result.append(
        Route("/v1/{rest:path}", unknown_url, methods=["GET", "POST", "PATCH", "PUT", "DELETE"])
    )
    return result
