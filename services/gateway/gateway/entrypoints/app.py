"""The ASGI app factory: routers, auth, the error contract, edge observability, OpenAPI.

FastAPI puts three layers of its own around an app's middlewares and calls them through two more
(`FastAPI.__call__`, `Starlette.__call__`): the 500 of last resort (ServerErrorMiddleware), its
telemetry's exception hook and its app-wide body limit. As the gateway is built (FastAPI's telemetry
off, no app-wide body limit, the edge middleware answering every exception with its own 500),
the three pass each HTTP request and its answer through unchanged: ~55 Python calls per posting
with its two webhook deliveries (issue 13). GatewayApp hands HTTP requests straight to the first
layer that does something, once the stack is built; the lifespan and anything else goes FastAPI's
way, and a stack with other layers (the OpenTelemetry instrumentation's SERVER span outermost)
is entered at its top.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi._body_limit import AppBodyLimitMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.telemetry._asgi import ExceptionTelemetryMiddleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.adapters.backends import Backends
from gateway.adapters.ratelimit import SharedPostingLimiter
from gateway.api.errors import ErrorBody, error_responses
from gateway.entrypoints import (
    applications_routes,
    coins_routes,
    credits_routes,
    engagement_routes,
    jobs_routes,
    marketplace_routes,
    ops_routes,
    payments_routes,
    payout_routes,
    wallet_routes,
)
from gateway.entrypoints.direct_routes import DirectRoutesMiddleware
from gateway.entrypoints.error_handlers import install_error_handlers
from gateway.entrypoints.input_guard import InputGuardMiddleware
from gateway.entrypoints.observability import EdgeMiddleware
from gateway.entrypoints.settings import GatewaySettings
from gateway.service_layer.auth import Authenticator
from hirepay_platform import identity, tracing

DESCRIPTION = """\
Hirepay's HTTP API: pay-to-post job ads, premium subscriptions, provider webhooks, and each user's
wallet (balances and history) with the admin reports of the ledger.

Authenticate with `Authorization: Bearer <JWT>` (HS256; `make token ROLE=company USER=<id>` in
development). Every error has the shape
`{"error": CODE, "message": text, "code"?: provider_code, ...}` (see the `ErrorBody` schema).
"""


class GatewayApp(FastAPI):
    """FastAPI, each HTTP request handed to the first layer of its middleware stack that does
    something for it (see the module's docstring)."""

    # (the middleware stack it was found in, the layer): None until the stack is built.
    _entry: tuple[ASGIApp, ASGIApp] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        entry = self._entry
        if entry is not None and scope["type"] == "http" and entry[0] is self.middleware_stack:
            scope["app"] = self  # (what Starlette.__call__ sets: Request.app)
            await entry[1](scope, receive, send)
            return
        await super().__call__(scope, receive, send)
        if scope["type"] == "http" and self.middleware_stack is not None:
            self._entry = self._entry_of(self.middleware_stack)

    def _entry_of(self, stack: ASGIApp) -> tuple[ASGIApp, ASGIApp] | None:
        """The stack and its first layer that does something for an HTTP request, or None when
        FastAPI.__call__ itself does something (a root path, its telemetry)."""
        if self.root_path or self._native_telemetry.enabled():
            return None
        layer = stack
        while isinstance(layer, _PASSED_THROUGH) and (
            not isinstance(layer, AppBodyLimitMiddleware) or self.max_body_size is None
        ):
            layer = layer.app
        return stack, layer


# The layers that pass an HTTP request and its answer through unchanged in the gateway: the edge
# middleware (inside them) answers every exception itself; FastAPI's telemetry is off (its
# exception hook acts only on a request its telemetry saw); no app-wide body limit is set (the
# input guard is the gateway's).
_PASSED_THROUGH = (ServerErrorMiddleware, ExceptionTelemetryMiddleware, AppBodyLimitMiddleware)


def create_app(settings: GatewaySettings, backends: Backends | None = None) -> FastAPI:
    """Build the gateway; gRPC channels open at start-up inside the server's event loop."""

    # Every backend call is signed as the gateway; a user's calls also carry their actor assertion.
    identity.configure(identity.EDGE, settings.service_token_secret.get_secret_value())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.backends = backends or Backends.connect(
            {
                "jobs": settings.jobs_target,
                "payments": settings.payments_target,
                "wallet": settings.wallet_target,
            },
            rpc_timeout=settings.rpc_timeout_seconds,
            saga_timeout=settings.saga_timeout_seconds,
        )
        # The posting rate limit is kept by jobs: it holds across every gateway replica.
        app.state.limiter = SharedPostingLimiter(
            app.state.backends.jobs, settings.rate_limit_per_minute, policy="create-with-payment"
        )
        try:
            yield
        finally:
            await app.state.backends.close()

    app = GatewayApp(
        title="Hirepay API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        servers=[{"url": settings.public_url}],
        # The interactive pages are for developers: off in production unless GATEWAY_DOCS_ENABLED.
        docs_url="/docs" if settings.docs_on() else None,
        redoc_url="/redoc" if settings.docs_on() else None,
        # FastAPI's own telemetry would add a second SERVER span per request and its own exception
        # logging; the OpenTelemetry FastAPI instrumentation (below) is the one span, and the edge
        # middleware the one metric and log per request.
        telemetry={
            "tracing": False,
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "auto_configure": False,
        },
    )
    app.state.settings = settings
    app.state.authenticator = Authenticator(
        settings.signing_keys(),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway=settings.jwt_leeway_seconds,
        max_lifetime=settings.jwt_max_lifetime_seconds,
    )
    install_error_handlers(app)
    # Innermost of the edge's middlewares: the posting and the webhooks, when well formed, are
    # answered here (after the input guard) instead of by FastAPI's routing (direct_routes.py).
    app.add_middleware(
        DirectRoutesMiddleware,
        routes=[*jobs_routes.DIRECT, *payments_routes.DIRECT],
        api_routes=[*jobs_routes.router.routes, *payments_routes.router.routes],
    )
    # Added last = outermost: the edge middleware sees (and measures) the guard's refusals too.
    app.add_middleware(InputGuardMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(EdgeMiddleware, behind_tls=settings.behind_tls)
    # Outermost of all: the request's SERVER span, which the middleware above runs inside.
    tracing.instrument_fastapi(app)
    app.include_router(ops_routes.router)
    app.include_router(payments_routes.router)
    app.include_router(jobs_routes.router)
    app.include_router(credits_routes.router)
    app.include_router(applications_routes.router)
    app.include_router(payout_routes.router)
    app.include_router(coins_routes.router)
    app.include_router(marketplace_routes.router)
    app.include_router(engagement_routes.router)
    app.include_router(wallet_routes.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with its default 422 validation answers replaced by our 400 ErrorBody
    and the answers the edge itself gives on every operation documented there too."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        servers=app.servers,
    )
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            _document_edge_answers(operation)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components.setdefault(
        "ErrorBody", ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    )
    app.openapi_schema = schema
    return schema


def _document_edge_answers(operation: dict[str, Any]) -> None:
    """What any operation may answer before its route runs: 400 from request validation and the
    input guard, 413 for a body above the limit, 401 for a bad token where a token is read."""
    responses = operation.setdefault("responses", {})
    if "HTTPValidationError" in str(responses.get("422", {})):
        del responses["422"]
    edge = [400]
    if "requestBody" in operation:
        edge.append(413)
    if operation.get("security"):
        edge.append(401)
    for status, answer in error_responses(*edge).items():
        responses.setdefault(
            str(status),
            {
                "description": answer["description"],
                "content": {"application/json": {"schema": _ERROR_REF}},
            },
        )


_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
