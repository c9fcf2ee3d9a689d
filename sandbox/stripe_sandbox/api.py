"""The `/v1/` API: authentication, form decoding, idempotency keys, the store lock, expansion
and Stripe-shaped responses around the operations in `resources/`."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from collections.abc import Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from sandbox_kit.faults import wait_for_disconnect
from sandbox_kit.idempotency import IdempotencyConflict, SavedResponse, fingerprint
from sandbox_kit.jsondata import dumps_indented
from stripe_sandbox import ids
from stripe_sandbox.errors import (
    StripeAPIError,
    api_error,
    authentication_error,
    idempotency_in_flight,
    idempotency_mismatch,
    invalid_param,
)
from stripe_sandbox.params import Params, decode_pairs, form_pairs
from stripe_sandbox.resources import (
    checkout,
    connect,
    customers,
    disputes,
    events,
    payment_intents,
    payment_methods,
    refunds,
    search,
    webhook_endpoints,
)
from stripe_sandbox.runtime import Sandbox
from stripe_sandbox.store import DEFAULT_API_VERSION, Context, StripeObject

log = logging.getLogger("stripe_sandbox.api")

Operation = Callable[..., StripeObject]

# Stripe refuses longer Idempotency-Key values.
MAX_IDEMPOTENCY_KEY_LENGTH = 255
_API_KEY = re.compile(r"(sk|rk)_test_[A-Za-z0-9_]+")

# (method, path, operation): path parameters are passed to the operation by name.
OPERATIONS: list[tuple[str, str, Operation]] = [
    ("POST", "/v1/payment_intents", payment_intents.create),
    ("GET", "/v1/payment_intents", payment_intents.list_),
    ("GET", "/v1/payment_intents/search", search.payment_intents),
    ("GET", "/v1/payment_intents/{intent}", payment_intents.retrieve),
    ("POST", "/v1/payment_intents/{intent}", payment_intents.update),
    ("POST", "/v1/payment_intents/{intent}/confirm", payment_intents.confirm),
    ("POST", "/v1/payment_intents/{intent}/capture", payment_intents.capture),
    ("POST", "/v1/payment_intents/{intent}/cancel", payment_intents.cancel),
    ("GET", "/v1/charges", payment_intents.list_charges),
    ("GET", "/v1/charges/search", search.charges),
    ("GET", "/v1/charges/{charge}", payment_intents.retrieve_charge),
    ("GET", "/v1/payment_methods/{payment_method}", payment_methods.retrieve),
    ("POST", "/v1/refunds", refunds.create),
    ("GET", "/v1/refunds", refunds.list_),
    ("GET", "/v1/refunds/{refund}", refunds.retrieve),
    ("POST", "/v1/refunds/{refund}", refunds.update),
    ("GET", "/v1/disputes", disputes.list_),
    ("GET", "/v1/disputes/{dispute}", disputes.retrieve),
    ("POST", "/v1/disputes/{dispute}", disputes.update),
    ("POST", "/v1/disputes/{dispute}/close", disputes.close_api),
    ("POST", "/v1/customers", customers.create),
    ("GET", "/v1/customers", customers.list_),
    ("GET", "/v1/customers/search", search.customers),
    ("GET", "/v1/customers/{customer}", customers.retrieve),
    ("POST", "/v1/customers/{customer}", customers.update),
    ("DELETE", "/v1/customers/{customer}", customers.delete),
    ("POST", "/v1/checkout/sessions", checkout.create),
    ("GET", "/v1/checkout/sessions", checkout.list_),
    ("GET", "/v1/checkout/sessions/{session}", checkout.retrieve),
    ("POST", "/v1/checkout/sessions/{session}/expire", checkout.expire),
    ("GET", "/v1/checkout/sessions/{session}/line_items", checkout.list_line_items),
    ("POST", "/v1/accounts", connect.create_account),
    ("GET", "/v1/accounts", connect.list_accounts),
    ("GET", "/v1/accounts/{account}", connect.retrieve_account),
    ("POST", "/v1/accounts/{account}", connect.update_account),
    ("DELETE", "/v1/accounts/{account}", connect.delete_account),
    ("POST", "/v1/account_links", connect.create_account_link),
    ("POST", "/v1/transfers", connect.create_transfer),
    ("GET", "/v1/transfers", connect.list_transfers),
    ("GET", "/v1/transfers/{transfer}", connect.retrieve_transfer),
    ("POST", "/v1/transfers/{transfer}", connect.update_transfer),
    ("POST", "/v1/transfers/{transfer}/reversals", connect.create_reversal),
    ("GET", "/v1/transfers/{transfer}/reversals", connect.list_reversals),
    ("POST", "/v1/payouts", connect.create_payout),
    ("GET", "/v1/payouts", connect.list_payouts),
    ("GET", "/v1/payouts/{payout}", connect.retrieve_payout),
    ("POST", "/v1/payouts/{payout}/cancel", connect.cancel_payout),
    ("GET", "/v1/events", events.list_),
    ("GET", "/v1/events/{event}", events.retrieve),
    ("POST", "/v1/webhook_endpoints", webhook_endpoints.create),
    ("GET", "/v1/webhook_endpoints", webhook_endpoints.list_),
    ("GET", "/v1/webhook_endpoints/{webhook_endpoint}", webhook_endpoints.retrieve),
    ("POST", "/v1/webhook_endpoints/{webhook_endpoint}", webhook_endpoints.update),
    ("DELETE", "/v1/webhook_endpoints/{webhook_endpoint}", webhook_endpoints.delete),
]


def _mask(key: str) -> str:
    return key[:8] + "*" * max(len(key) - 12, 0) + key[-4:] if len(key) > 12 else "****"


def authenticate(header: str) -> str:
    """The secret key from `Authorization: Bearer sk_test_...` or HTTP basic auth (`key:`)."""
    if not header.strip():
        raise authentication_error(
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
            "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details."
        )
    scheme, _, value = header.strip().partition(" ")
    key = value.strip()
    if scheme.lower() == "basic":
        try:
            key = base64.b64decode(key, validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            key = ""
    elif scheme.lower() != "bearer":
        key = ""
    if not _API_KEY.fullmatch(key):
        raise authentication_error(f"Invalid API Key provided: {_mask(key)}")
    return key


def base_url(request: Request, sb: Sandbox) -> str:
    """Where links to the sandbox's own pages point."""
    return _base_url(sb, request.url.scheme, request.headers.get("host"))


def _base_url(sb: Sandbox, scheme: str, host: str | None) -> str:
    if sb.config.public_url:
        return sb.config.public_url
    return f"{scheme}://{host or f'{sb.config.host}:{sb.config.port}'}"


Reply = tuple[int, bytes, dict[str, str]]
"""An answer: status, JSON body and headers beyond the body's own (Request-Id first)."""


async def _send(send: Send, reply: Reply) -> None:
    """The answer as Starlette's Response(media_type="application/json") sends it."""
    status, body, headers = reply
    raw = [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    ]
    raw.append((b"content-length", str(len(body)).encode()))
    raw.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _reply(status: int, body: bytes, request_id: str, extra: dict[str, str] | None = None) -> Reply:
    return status, body, {"Request-Id": request_id, **(extra or {})}


def _dump(obj: Any) -> bytes:
    return dumps_indented(obj).encode()


def _begin(sb: Sandbox, api_key: str, key: str, print_: str) -> SavedResponse | None:
    """The saved answer for (API key, Idempotency-Key), or None with the key now in flight;
    Stripe's errors for a key too long, used with other parameters, or still running."""
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise invalid_param(
            f"Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters.",
            param="Idempotency-Key",
        )
    try:
        return sb.idempotency.begin(api_key, key, print_)
    except IdempotencyConflict as conflict:
        if conflict.reason == "mismatch":
            raise idempotency_mismatch(key) from None
        raise idempotency_in_flight() from None


async def _body(receive: Receive) -> bytes:
    """The request's body, read as Starlette's Request.body() reads it."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def handle(scope: Scope, receive: Receive, operation: Operation) -> Reply:
    """Run one API operation as Stripe would answer it.

    Read from the ASGI scope itself (issue 13): Starlette's Request looked each header up by
    walking every header the client sent, and its URL parsed the whole URL again; the few headers
    read here come from one dict of them."""
    sb: Sandbox = scope["app"].state.sandbox
    request_id = ids.new_id("req")
    method: str = scope["method"]
    path: str = scope["path"]
    headers = {name: value for name, value in reversed(scope["headers"])}  # the first one wins
    try:
        api_key = authenticate(headers.get(b"authorization", b"").decode("latin-1"))
    except StripeAPIError as error:
        return _reply(error.status, _dump(error.body()), request_id, error.headers)

    posted = method == "POST"
    raw = (await _body(receive)).decode() if posted else scope["query_string"].decode()
    pairs = form_pairs(raw)
    found = headers.get(b"idempotency-key") if posted else None
    idempotency_key = found.decode("latin-1") if found is not None else None
    version = headers.get(b"stripe-version", b"").decode("latin-1") or DEFAULT_API_VERSION
    echo = {"Stripe-Version": version}
    if idempotency_key:
        echo["Idempotency-Key"] = idempotency_key
    if idempotency_key:
        try:
            saved = _begin(sb, api_key, idempotency_key, fingerprint(method, path, raw, pairs))
        except StripeAPIError as error:
            return _reply(error.status, _dump(error.body()), request_id, echo)
        if saved is not None:
            original = saved.headers.get("Request-Id", "")
            replay = {**echo, "Idempotent-Replayed": "true", "Original-Request": original}
            return _reply(saved.status, saved.body, request_id, replay)

    kept: SavedResponse | None = None
    try:
        latency, hang = sb.faults.take_slowness(method, path)
        if latency:
            await asyncio.sleep(latency)
        if hang is not None and await wait_for_disconnect(receive, hang):
            log.info("timeout fault: client gave up on %s %s; nothing done", method, path)
            return _reply(499, b"", request_id)  # nobody is listening any more
        account = headers.get(b"stripe-account")
        host = headers.get(b"host")
        ctx = Context(
            account=account.decode("latin-1") if account is not None else None,
            request_id=request_id,
            idempotency_key=idempotency_key,
            api_version=version,
            base_url=_base_url(sb, scope["scheme"], host.decode("latin-1") if host else None),
        )
        status, body, cacheable = await _execute(sb, ctx, operation, pairs, scope["path_params"])
        if cacheable:
            kept = SavedResponse(status, body, {"Request-Id": request_id})
    finally:
        if idempotency_key:
            sb.idempotency.finish(api_key, idempotency_key, kept)
    return _reply(status, body, request_id, echo)


async def _execute(
    sb: Sandbox,
    ctx: Context,
    operation: Operation,
    pairs: list[tuple[str, str]],
    path_params: dict[str, str],
) -> tuple[int, bytes, bool]:
    """(status, body, keep-for-idempotency) of running `operation` under the store lock."""
    async with sb.store.lock:
        try:
            params = Params(decode_pairs(pairs))
            expand = params.strings("expand")
            connect.require_account(sb, ctx.account)
            result = operation(sb, ctx, params, **path_params)
            return 200, _dump(sb.store.expand(result, expand) if expand else result), True
        except StripeAPIError as error:
            return error.status, _dump(error.body()), error.cacheable
        except Exception:
            log.exception("unexpected error in %s", getattr(operation, "__qualname__", operation))
            return 500, _dump(api_error(500, "Unexpected sandbox error.").body()), False


class _Endpoint:
    """One operation as an ASGI app: Starlette's router hands it the request as it is, without
    the Request object and exception wrapper it builds around a function endpoint."""

    def __init__(self, operation: Operation) -> None:
        self.operation = operation
        self.__name__ = operation.__name__

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _send(send, await handle(scope, receive, self.operation))


def routes() -> list[BaseRoute]:
    table: list[BaseRoute] = [
        Route(path, _Endpoint(operation), methods=[method])
        for method, path, operation in OPERATIONS
    ]
    table.append(Route("/v1/{rest:path}", _UnknownUrl(), methods=["GET", "POST", "DELETE"]))
    return table


class _UnknownUrl:
    """Stripe's 404 for a URL under /v1/ it does not know (an ASGI app, as the operations)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = StripeAPIError(
            f"Unrecognized request URL ({scope['method']}: {scope['path']}). Please see "
            "https://stripe.com/docs or we can help at https://support.stripe.com/.",
            status=404,
        )
        await _send(send, _reply(404, _dump(error.body()), ids.new_id("req")))
