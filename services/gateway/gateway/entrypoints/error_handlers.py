"""The FastAPI exception handlers: every expected failure leaves the gateway as one PAY-11 body."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.api.backend_errors import api_error_from_remote
from gateway.api.errors import ApiError, api_error_from_http, api_error_from_validation
from hirepay_platform.errors import RemoteError

log = logging.getLogger("gateway.errors")


def error_response(error: ApiError, request: Request | None = None) -> JSONResponse:
    """Render an ApiError, with headers the route prepared (e.g. RateLimit) when there is a request."""
    headers = dict(getattr(request.state, "response_headers", {}) or {}) if request else {}
    headers.update(error.headers)
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc, request)


async def on_remote_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RemoteError)
    mapped = api_error_from_remote(exc)
    if mapped.status >= 500:
        log.warning(
            "backend error",
            extra={"fields": {"backend": exc.service, "reason": exc.reason}},
        )
    return error_response(mapped, request)


async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(api_error_from_validation(exc.errors()), request)


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(api_error_from_http(exc), request)


# The one mapping of api/errors and api/backend_errors, by exception type: what FastAPI's exception
# handlers answer, and what the operations answered directly (direct_routes.py) answer the same way.
HANDLERS: dict[type[Exception], Callable[[Request, Exception], Awaitable[JSONResponse]]] = {
    ApiError: on_api_error,
    RemoteError: on_remote_error,
    RequestValidationError: on_validation_error,
    StarletteHTTPException: on_http_error,
}


def install_error_handlers(app: FastAPI) -> None:
    """Route every expected exception through the one mapping of api/errors and api/backend_errors."""
    for kind, handler in HANDLERS.items():
        app.add_exception_handler(kind, handler)
