"""FastAPI dependencies shared by the routers: the caller (SEC-1), the backends, the limiter, body
reading."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from gateway.adapters.backends import Backends
from gateway.adapters.ratelimit import SharedPostingLimiter
from gateway.api.errors import ApiError, forbidden, unauthenticated, validation_failed
from gateway.api.redirects import is_allowed_redirect
from gateway.entrypoints.input_guard import JSON_BODY_KEY
from gateway.service_layer.auth import Authenticator, InvalidToken, Principal
from hirepay_platform import identity
from hirepay_platform.untrusted import loads_json

_bearer = HTTPBearer(auto_error=False, description="A JWT signed with HS256 (`make token`).")


async def optional_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    """The caller, or None when no Authorization header was sent; a bad token is refused.

    The verified caller becomes the actor of every backend call made for this request: the
    platform client sends it as an assertion signed by the gateway, which the services trust
    instead of any actor field of a request (this runs in the request's own task, so the
    context variable it sets never reaches another request)."""
    identity.act_for(None)
    if request.headers.get("authorization") is None:
        return None
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise unauthenticated("expected a bearer token")
    authenticator: Authenticator = request.app.state.authenticator
    try:
        principal = authenticator.verify(credentials.credentials)
    except InvalidToken as exc:
        raise unauthenticated(str(exc)) from None
    identity.act_for(identity.Actor(principal.user_id, principal.role))
    return principal


async def current_principal(
    principal: Annotated[Principal | None, Depends(optional_principal)],
) -> Principal:
    """The caller; 401 without a token."""
    if principal is None:
        raise unauthenticated()
    return principal


def roles_allowed(*roles: str) -> frozenset[str]:
    """The roles that pass a check for `roles`: those, and admin always."""
    return frozenset(roles) | {"admin"}


def require_roles(*roles: str) -> Callable[..., Any]:
    """Dependency: the caller, who must have one of `roles` (admin always passes); else 403."""
    allowed = roles_allowed(*roles)

    async def dependency(
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> Principal:
        if principal.role not in allowed:
            raise forbidden(f"This requires the role {' or '.join(sorted(allowed))}")
        return principal

    return dependency


def first_headers(request: Request) -> dict[bytes, bytes]:
    """The request's headers by name (ASGI's, lowercase), each name's first value as
    `request.headers.get` finds it, in one pass: a few headers read this way instead of through
    `request.headers` cost about 15 Python calls fewer (issue 13)."""
    return dict(reversed(request.scope["headers"]))


def header_text(headers: dict[bytes, bytes], name: bytes) -> str | None:
    """A header of `first_headers` as `request.headers.get` gives it (latin-1), or None."""
    value = headers.get(name)
    return None if value is None else value.decode("latin-1")


def accepted_caller(
    request: Request, allowed: frozenset[str], authorization: str | None
) -> Principal | None:
    """The caller when the request carries a bearer token (`authorization`: its Authorization
    header) that the dependencies above accept (HTTPBearer's reading of the header, the same
    Authenticator) and a role in `allowed`; None for any other request, whose refusal (401, 403)
    those dependencies then answer. Like optional_principal, it makes the caller the actor of the
    request's backend calls.

    For the operations answered directly (direct_routes.py), without FastAPI's dependency solving."""
    scheme, token = get_authorization_scheme_param(authorization)
    if not token or scheme.lower() != "bearer":
        return None
    authenticator: Authenticator = request.scope["app"].state.authenticator
    try:
        principal = authenticator.verify(token)
    except InvalidToken:
        return None
    if principal.role not in allowed:
        return None
    identity.act_for(identity.Actor(principal.user_id, principal.role))
    return principal


OptionalUser = Annotated[Principal | None, Depends(optional_principal)]
AnyUser = Annotated[Principal, Depends(current_principal)]
Company = Annotated[Principal, Depends(require_roles("company"))]
# Admin functions: 403 for everyone else.
Admin = Annotated[Principal, Depends(require_roles())]


# Async on purpose: FastAPI runs a plain `def` dependency in its thread pool, a hand-off to a
# worker thread and back (two thread wake-ups) per request for what is an attribute read.
async def get_backends(request: Request) -> Backends:
    return request.app.state.backends


async def get_limiter(request: Request) -> SharedPostingLimiter:
    return request.app.state.limiter


BackendsDep = Annotated[Backends, Depends(get_backends)]
LimiterDep = Annotated[SharedPostingLimiter, Depends(get_limiter)]


def check_redirects(request: Request, urls: dict[str, str | None]) -> None:
    """Every redirect target a client gave must be on an allowed origin (no open redirect)."""
    allowed = request.app.state.settings.redirect_origins()
    bad = {
        name: "must be a URL on an allowed origin (GATEWAY_ALLOWED_REDIRECT_ORIGINS)"
        for name, url in urls.items()
        if url is not None and not is_allowed_redirect(url, allowed)
    }
    if bad:
        raise validation_failed(bad)


async def read_raw_body(request: Request, limit: int) -> bytes:
    """The request body exactly as received, refusing more than `limit` bytes (413).

    A JSON body the input guard kept (the whole body, read under the gateway's body limit before
    any route ran) is those very bytes: taken as they are, not read again through the request's
    stream, the guard's replay and a Headers object (issue 13: a provider's webhook delivery, two
    per card posting). Any other body is read here."""
    kept = request.scope.get(JSON_BODY_KEY)
    if kept is not None and len(kept[0]) <= limit:
        return kept[0]
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "PAYLOAD_TOO_LARGE", "The request body is too large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "PAYLOAD_TOO_LARGE", "The request body is too large")
        chunks.append(chunk)
    return b"".join(chunks)


NO_JSON_BODY: Any = object()
"""json_model_body's answer for a request whose body FastAPI would not parse as JSON."""


def json_model_body(request: Request, content_type: str | None) -> Any:
    """The body FastAPI would validate against an operation's body model, when it is JSON the input
    guard already parsed: a non-empty body sent as `application/json` (`content_type`: its
    Content-Type header; FastAPI also parses `application/*+json`, and what it refuses it words
    itself). NO_JSON_BODY for any other.

    For the operations answered directly (direct_routes.py), without FastAPI's body reading."""
    # As FastAPI reads the media type (email.message: the part before any parameter, lowercased).
    if content_type is None or content_type.partition(";")[0].strip().lower() != "application/json":
        return NO_JSON_BODY
    kept = request.scope.get(JSON_BODY_KEY)
    return NO_JSON_BODY if kept is None else kept[1]


async def json_body(request: Request) -> Any:
    """The request body parsed as untrusted JSON (hirepay_platform.untrusted.loads_json): as the
    input guard already parsed it, when it did (the same bytes), else parsed here."""
    body = await request.body()
    kept = request.scope.get(JSON_BODY_KEY)
    if kept is not None and kept[0] == body:
        return kept[1]
    return loads_json(body)
