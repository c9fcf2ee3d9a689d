"""PayPal's REST surface: the OAuth2 token endpoint, Orders v2, Payments v2 and the webhook
verification endpoint, with bearer tokens, `PayPal-Request-Id` idempotency, `Prefer` and
`PayPal-Mock-Response` negative testing."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from paypal_sandbox import disputes, orders, payments
from paypal_sandbox.errors import PayPalError, debug_id, invalid, missing, not_found
from paypal_sandbox.orders import Call
from paypal_sandbox.state import PayPalObject, PayPalState
from sandbox_kit.api import IdempotentRequest, Reply, json_object, perform
from sandbox_kit.idempotency import IdempotencyConflict

# An operation answers (HTTP status, object or None for no content).
Operation = Callable[[PayPalState, Call, dict[str, str]], tuple[int, PayPalObject | None]]

VERIFY_FIELDS = (
    "auth_algo",
    "cert_url",
    "transmission_id",
    "transmission_sig",
    "transmission_time",
    "webhook_id",
    "webhook_event",
)


def state_of(request: Request) -> PayPalState:
    st: PayPalState = request.app.state.sandbox
    return st


def _dump(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


async def token(request: Request) -> Response:
    """`POST /v1/oauth2/token` with the app's client id and secret (HTTP basic)."""
    st = state_of(request)
    credentials = _basic_credentials(request)
    if credentials != (st.config.client_id, st.config.client_secret):
        return _oauth_error(401, "invalid_client", "Client Authentication failed")
    form = parse_qs((await request.body()).decode())
    grant = (form.get("grant_type") or [None])[0]
    if grant is None:
        return _oauth_error(400, "unsupported_grant_type", "Grant Type is NULL")
    if grant != "client_credentials":
        return _oauth_error(400, "unsupported_grant_type", f"Grant Type {grant} is not supported")
    access_token = "A21AA" + secrets.token_urlsafe(64)
    async with st.kit.lock:
        st.tokens[access_token] = st.kit.clock.time() + st.config.token_ttl
    return JSONResponse(
        {
            "scope": "https://uri.paypal.com/services/payments/payment "
            "https://uri.paypal.com/services/applications/webhooks "
            "https://uri.paypal.com/services/payments/refund",
            "access_token": access_token,
            "token_type": "Bearer",
            "app_id": "APP-80W284485P519543T",
            "expires_in": st.config.token_ttl,
            "nonce": f"{st.kit.clock.iso()}{secrets.token_urlsafe(16)}",
        }
    )


def _bearer_error(st: PayPalState, request: Request) -> Response | None:
    scheme, _, value = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        body = PayPalError(401).body()
        return JSONResponse(body, status_code=401)
    expiry = st.tokens.get(value.strip())
    if expiry is None:
        return _oauth_error(401, "invalid_token", "Token signature verification failed")
    if expiry < st.kit.clock.time():
        return _oauth_error(401, "invalid_token", "Access Token not found in cache")
    return None


def _mock_code(request: Request) -> str | None:
    raw = request.headers.get("paypal-mock-response")
    if not raw:
        return None
    try:
        code = json.loads(raw).get("mock_application_codes")
    except (ValueError, AttributeError):
        return None
    return str(code) if code else None


def _minimal(obj: PayPalObject) -> PayPalObject:
    return {"id": obj["id"], "status": obj["status"], "links": obj["links"]}


def _conflict(conflict: IdempotencyConflict) -> Reply:
    if conflict.reason == "mismatch":
        error = PayPalError(
            422,
            "DUPLICATE_REQUEST_ID",
            "The value of PayPal-Request-Id header has already been used.",
            field="PayPal-Request-Id",
            value=conflict.key,
            location="header",
        )
    else:
        error = PayPalError(
            422,
            "PREVIOUS_REQUEST_IN_PROGRESS",
            "A previous request with this PayPal-Request-Id is in progress; retry later.",
            field="PayPal-Request-Id",
            value=conflict.key,
            location="header",
        )
    return Reply(error.status, _dump(error.body()), keep=False)


def _reply(status: int, obj: PayPalObject | None, request: Request, minimal_ok: bool) -> Reply:
    """The answer's body as `Prefer` asks: POSTs give `{id, status, links}` (void: 204) unless
    `return=representation`."""
    headers = {"Paypal-Debug-Id": debug_id()}
    representation = "return=representation" in request.headers.get("prefer", "")
    minimal = request.method == "POST" and minimal_ok and not representation
    if obj is None or (minimal and status == 204):
        return Reply(204, b"", headers)
    if minimal:
        obj = _minimal(obj)
    return Reply(200 if status == 204 else status, _dump(obj), headers)


def _idempotent(st: PayPalState, request: Request) -> IdempotentRequest | None:
    request_id = request.headers.get("paypal-request-id") if request.method == "POST" else None
    if not request_id:
        return None
    return IdempotentRequest(
        scope=st.config.client_id,
        key=request_id,
        conflict=_conflict,
        # "A successful response to an idempotent request returns 200 OK."
        replay_status=lambda status: 200 if status == 201 else status,
    )


def endpoint(operation: Operation, *, minimal_ok: bool = True) -> Callable[[Request], Any]:
    """An API route: bearer token, JSON body, `PayPal-Request-Id`, `Prefer`, PayPal errors."""

    async def handle(request: Request) -> Response:
        st = state_of(request)
        if (denied := _bearer_error(st, request)) is not None:
            return denied
        raw = await request.body() if request.method == "POST" else b""
        body = json_object(raw)
        call = Call(base=st.kit.base_url(request), body=body or {}, mock=_mock_code(request))

        def run() -> Reply:
            st.base_url = call.base
            try:
                if body is None:
                    raise PayPalError(
                        400,
                        "MALFORMED_REQUEST_JSON",
                        "The request JSON is not well formed.",
                        keep=False,
                    )
                status, obj = operation(st, call, dict(request.path_params))
            except PayPalError as error:
                return Reply(
                    error.status,
                    _dump(error.body()),
                    {"Paypal-Debug-Id": debug_id()},
                    keep=error.keep,
                )
            return _reply(status, obj, request, minimal_ok)

        return await perform(st.kit, request, run, _idempotent(st, request), raw)

    handle.__name__ = getattr(operation, "__name__", "operation")
    return handle


# -- operations -----------------------------------------------------------------------------


def create_order(st: PayPalState, call: Call, path: dict[str, str]) -> tuple[int, PayPalObject]:
    orders.check_mock(call)
    return 201, orders.create(st, call)


def get_order(st: PayPalState, call: Call, path: dict[str, str]) -> tuple[int, PayPalObject]:
    return 200, orders.retrieve(st, path["order_id"])


def capture_order(st: PayPalState, call: Call, path: dict[str, str]) -> tuple[int, PayPalObject]:
    return 201, orders.capture(st, path["order_id"], call)


def authorize_order(st: PayPalState, call: Call, path: dict[str, str]) -> tuple[int, PayPalObject]:
    return 201, orders.authorize(st, path["order_id"], call)


def get_authorization(
    st: PayPalState, call: Call, path: dict[str, str]
) -> tuple[int, PayPalObject]:
    return 200, payments.get_authorization(st, path["authorization_id"])


def capture_authorization(
    st: PayPalState, call: Call, path: dict[str, str]
) -> tuple[int, PayPalObject]:
    return 201, payments.capture_authorization(st, path["authorization_id"], call)


def void_authorization(
    st: PayPalState, call: Call, path: dict[str, str]
) -> tuple[int, PayPalObject | None]:
    auth = payments.void_authorization(st, path["authorization_id"], call)
    return 204, auth  # 204 No Content unless Prefer: return=representation


def get_capture(st: PayPalState, call: Call, path: dict[str, str]) -> tuple[int, PayPalObject]:
    return 200, payments.get_capture(st, path["capture_id"])


def refund_capture(st: PayPalState, call: Call, path: dict[str, str]) -> tuple[int, PayPalObject]:
    return 201, payments.refund_capture(st, path["capture_id"], call)


def get_refund(st: PayPalState, call: Call, path: dict[str, str]) -> tuple[int, PayPalObject]:
    return 200, payments.get_refund(st, path["refund_id"])


def get_dispute(st: PayPalState, call: Call, path: dict[str, str]) -> tuple[int, PayPalObject]:
    return 200, disputes.get_dispute(st, path["dispute_id"])


def verify_webhook_signature(
    st: PayPalState, call: Call, path: dict[str, str]
) -> tuple[int, PayPalObject]:
    for name in VERIFY_FIELDS:
        if call.body.get(name) in (None, ""):
            raise missing(f"/{name}")
    if not isinstance(call.body["webhook_event"], dict):
        raise invalid(
            "/webhook_event", "INVALID_PARAMETER_SYNTAX", "webhook_event must be an object."
        )
    verified = st.verify(call.body)
    return 200, {"verification_status": "SUCCESS" if verified else "FAILURE"}


def get_event(st: PayPalState, call: Call, path: dict[str, str]) -> tuple[int, PayPalObject]:
    event = st.events.get(path["event_id"])
    if event is None:
        raise not_found("event_id", path["event_id"])
    return 200, event


async def unknown_url(request: Request) -> Response:
    error = PayPalError(
        404, "INVALID_RESOURCE_ID", f"No such endpoint: {request.method} {request.url.path}"
    )
    return JSONResponse(error.body(), status_code=404)


def routes() -> list[BaseRoute]:
    table: list[tuple[str, str, Operation, bool]] = [
        ("POST", "/v2/checkout/orders", create_order, True),
        ("GET", "/v2/checkout/orders/{order_id}", get_order, True),
        ("POST", "/v2/checkout/orders/{order_id}/authorize", authorize_order, False),
        ("POST", "/v2/checkout/orders/{order_id}/capture", capture_order, False),
        ("GET", "/v2/payments/authorizations/{authorization_id}", get_authorization, True),
        (
            "POST",
            "/v2/payments/authorizations/{authorization_id}/capture",
            capture_authorization,
            True,
        ),
        ("POST", "/v2/payments/authorizations/{authorization_id}/void", void_authorization, True),
        ("GET", "/v2/payments/captures/{capture_id}", get_capture, True),
        ("POST", "/v2/payments/captures/{capture_id}/refund", refund_capture, True),
        ("GET", "/v2/payments/refunds/{refund_id}", get_refund, True),
        ("GET", "/v1/customer/disputes/{dispute_id}", get_dispute, True),
        ("POST", "/v1/notifications/verify-webhook-signature", verify_webhook_signature, False),
        ("GET", "/v1/notifications/webhooks-events/{event_id}", get_event, True),
    ]
    result: list[BaseRoute] = [Route("/v1/oauth2/token", token, methods=["POST"])]
    result += [
        Route(path, endpoint(op, minimal_ok=minimal), methods=[method])
        for method, path, op, minimal in table
    ]
    result.append(Route("/v1/{rest:path}", unknown_url, methods=["GET", "POST", "PATCH", "DELETE"]))
    result.append(Route("/v2/{rest:path}", unknown_url, methods=["GET", "POST", "PATCH", "DELETE"]))
    return result
