"""The ASGI app factory: routers, auth, the error contract, edge observability, OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gateway.adapters.backends import Backends
from gateway.adapters.ratelimit import TokenBucketLimiter
from gateway.api.errors import ErrorBody
from gateway.entrypoints import (
    applications_routes,
    credits_routes,
    jobs_routes,
    ops_routes,
    payments_routes,
)
from gateway.entrypoints.error_handlers import install_error_handlers
from gateway.entrypoints.observability import EdgeMiddleware
from gateway.entrypoints.settings import GatewaySettings
from gateway.service_layer.auth import Authenticator

DESCRIPTION = """\
Hirepay's HTTP API: pay-to-post job ads, premium subscriptions and provider webhooks.

Authenticate with `Authorization: Bearer <JWT>` (HS256; `make token ROLE=company USER=<id>` in
development). Every error has the shape
`{"error": CODE, "message": text, "code"?: provider_code, ...}` (see the `ErrorBody` schema).
"""


def create_app(settings: GatewaySettings, backends: Backends | None = None) -> FastAPI:
    """Build the gateway; gRPC channels open at start-up inside the server's event loop."""

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
        try:
            yield
        finally:
            await app.state.backends.close()

    app = FastAPI(
        title="Hirepay API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        servers=[{"url": settings.public_url}],
        # FastAPI's own telemetry would add a second SERVER span per request and its own exception
        # logging; the edge middleware below is the one span, metric and log per request.
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
    )
    app.state.limiter = TokenBucketLimiter(
        settings.rate_limit_per_minute, policy="create-with-payment"
    )
    install_error_handlers(app)
    app.add_middleware(EdgeMiddleware)
    app.include_router(ops_routes.router)
    app.include_router(payments_routes.router)
    app.include_router(jobs_routes.router)
    app.include_router(credits_routes.router)
    app.include_router(applications_routes.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with its default 422 validation answers replaced by our 400 ErrorBody."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        servers=app.servers,
    )
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            auto = responses.get("422", {})
            if "HTTPValidationError" in str(auto):
                del responses["422"]
                responses.setdefault(
                    "400",
                    {
                        "description": "VALIDATION_FAILED (with `fields`)",
                        "content": {"application/json": {"schema": error_ref}},
                    },
                )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components.setdefault(
        "ErrorBody", ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    )
    app.openapi_schema = schema
    return schema
