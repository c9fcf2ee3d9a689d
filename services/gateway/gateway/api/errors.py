"""The one mapping of every failure to the PAY-11 JSON error contract.

`{"error": CODE, "message": text, "code": provider_code?, ...}`: backend errors (RemoteError, rebuilt
from the callee's google.rpc.ErrorInfo), request validation errors, auth failures and anything
unexpected all leave the gateway through `api_error_from_*` and `error_response` below. Messages of
unexpected failures are generic: no stack trace, internal address or secret reaches a client.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from hirepay_platform.errors import ErrorKind, RemoteError

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """Every error answered by the gateway (PAY-11)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    error: str = Field(description="Machine-readable code, e.g. PAYMENT_DECLINED.")
    message: str = Field(description="Human-readable explanation, safe to show.")
    code: str | None = Field(
        default=None, description="Provider code, e.g. card_declined, expired_card."
    )
    fields: dict[str, str] | None = Field(
        default=None, description="VALIDATION_FAILED: each bad field and what is wrong with it."
    )
    transactionId: str | None = Field(
        default=None, description="PAYMENT_TIMEOUT: the payment whose outcome is being resolved."
    )
    retry: bool | None = Field(default=None, description="True when retrying later may succeed.")
    expiresAt: str | None = Field(
        default=None, description="ALREADY_SUBSCRIBED: when the active subscription ends."
    )


class ApiError(Exception):
    """An HTTP error in the PAY-11 shape; raised anywhere, rendered once by `error_response`."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = dict(headers or {})
        self.extra = {k: v for k, v in extra.items() if v is not None}

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "message": self.message, **self.extra}


# --- Constructors for errors the gateway itself raises -------------------------------------------


def validation_failed(fields: Mapping[str, str], message: str = "") -> ApiError:
    """400 VALIDATION_FAILED with field-level problems."""
    return ApiError(
        400,
        "VALIDATION_FAILED",
        message or "The request is invalid: " + ", ".join(sorted(fields)),
        fields=dict(fields),
    )


def not_found(what: str = "resource") -> ApiError:
    """404 NOT_FOUND: also the answer for objects that exist but belong to someone else (SEC-2)."""
    return ApiError(404, "NOT_FOUND", f"The {what} was not found")


def forbidden(message: str = "You are not allowed to do this") -> ApiError:
    return ApiError(403, "FORBIDDEN", message)


def unauthenticated(problem: str | None = None) -> ApiError:
    """401 with an RFC 6750 challenge; `problem` names what is wrong with a presented token."""
    challenge = 'Bearer realm="hirepay"'
    if problem is not None:
        challenge += f', error="invalid_token", error_description="{problem}"'
    message = "Authentication required" if problem is None else f"Invalid token: {problem}"
    return ApiError(401, "UNAUTHENTICATED", message, headers={"WWW-Authenticate": challenge})


# --- Backend errors -------------------------------------------------------------------------------

# Reasons with a fixed public answer: (HTTP status, error code, message).
_REASONS: dict[str, tuple[int, str, str]] = {
    "PAYMENT_DECLINED": (402, "PAYMENT_DECLINED", "Your payment method was declined"),
    "INSUFFICIENT_FUNDS": (402, "INSUFFICIENT_FUNDS", "Insufficient funds in account"),
    "INSUFFICIENT_CREDITS": (402, "INSUFFICIENT_CREDITS", "Not enough job credits to post"),
    "PAYMENT_TIMEOUT": (504, "PAYMENT_TIMEOUT", "Payment provider did not respond in time"),
    "PAYMENT_PROVIDER_UNAVAILABLE": (
        502,
        "PAYMENT_PROVIDER_UNAVAILABLE",
        "The payment provider is unavailable; nothing was charged, please try again later",
    ),
    "INVALID_PAYMENT_DETAILS": (400, "INVALID_PAYMENT_DETAILS", "The payment details are invalid"),
    "ALREADY_SUBSCRIBED": (409, "ALREADY_SUBSCRIBED", "User already has an active subscription"),
    "IDEMPOTENCY_MISMATCH": (
        422,
        "IDEMPOTENCY_KEY_REUSED",
        "This Idempotency-Key was already used with a different request body",
    ),
    "REQUEST_IN_PROGRESS": (
        409,
        "IDEMPOTENCY_KEY_IN_USE",
        "A request with this Idempotency-Key is still being processed; retry shortly",
    ),
    "INVALID_SIGNATURE": (400, "INVALID_SIGNATURE", "The webhook signature is invalid or stale"),
    "EVENT_NOT_APPLICABLE_YET": (
        503,
        "SERVICE_UNAVAILABLE",
        "The event cannot be applied yet; deliver it again later",
    ),
    "TERMS_NOT_ACCEPTED": (400, "TERMS_NOT_ACCEPTED", "The posting terms must be accepted"),
    "TERMS_OUTDATED": (400, "TERMS_OUTDATED", "The accepted terms version is not the current one"),
    "FEE_MISMATCH": (400, "FEE_MISMATCH", "The amount does not match the posting fee"),
    "INVALID_TRANSITION": (409, "INVALID_TRANSITION", "The job cannot change to that status now"),
    "PLAN_NOT_FOUND": (400, "VALIDATION_FAILED", "The plan does not exist"),
    "PAYMENT_CANCELLED": (
        402,
        "PAYMENT_CANCELLED",
        "The payment was cancelled; nothing was charged",
    ),
    "PAYMENT_EXPIRED": (
        402,
        "PAYMENT_EXPIRED",
        "The payment was not completed in time; nothing was posted",
    ),
    "ACTIVATION_FAILED": (
        409,
        "ACTIVATION_FAILED",
        "The job could not be activated; any money taken is refunded automatically",
    ),
    "POSTING_BLOCKED": (
        429,
        "POSTING_BLOCKED",
        "Posting is blocked for review after too many failed payments; "
        "retry after the time in Retry-After",
    ),
}

# Provider decline codes -> what to tell the customer (Stripe's codes).
_DECLINE_MESSAGES = {
    "card_declined": "Your card was declined",
    "expired_card": "Your card has expired",
    "incorrect_cvc": "Your card's security code is incorrect",
    "processing_error": "An error occurred while processing your card; try again",
    "incorrect_number": "Your card number is incorrect",
    "lost_card": "Your card was declined",
    "stolen_card": "Your card was declined",
}

# Fallbacks by kind, for reasons the gateway does not know by name.
_KINDS: dict[ErrorKind, tuple[int, str, str]] = {
    ErrorKind.INVALID_ARGUMENT: (400, "VALIDATION_FAILED", "The request is invalid"),
    ErrorKind.NOT_FOUND: (404, "NOT_FOUND", "The resource was not found"),
    ErrorKind.ALREADY_EXISTS: (409, "CONFLICT", "The resource already exists"),
    ErrorKind.FAILED_PRECONDITION: (409, "CONFLICT", "The operation is not allowed now"),
    ErrorKind.ABORTED: (409, "CONFLICT", "A concurrent change won; retry the request"),
    ErrorKind.UNAVAILABLE: (503, "SERVICE_UNAVAILABLE", "A service is unavailable; retry later"),
    ErrorKind.PERMISSION_DENIED: (403, "FORBIDDEN", "You are not allowed to do this"),
    ErrorKind.UNAUTHENTICATED: (401, "UNAUTHENTICATED", "Authentication required"),
    ErrorKind.RESOURCE_EXHAUSTED: (429, "RATE_LIMITED", "Too many requests; retry later"),
    ErrorKind.DEADLINE_EXCEEDED: (
        504,
        "UPSTREAM_TIMEOUT",
        "A service did not answer in time; retry with the same Idempotency-Key",
    ),
    ErrorKind.INTERNAL: (500, "INTERNAL_ERROR", "Something went wrong on our side"),
}

# Reasons whose message was written for people by our own services (kinds below 500).
_SAFE_MESSAGE_KINDS = {
    ErrorKind.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND,
    ErrorKind.ALREADY_EXISTS,
    ErrorKind.FAILED_PRECONDITION,
    ErrorKind.ABORTED,
    ErrorKind.PERMISSION_DENIED,
}


# ErrorInfo metadata keys that identify things rather than name a bad field.
_NOT_FIELDS = frozenset(
    {
        "transaction_id",
        "payment_id",
        "saga_id",
        "retry",
        "code",
        "decline_code",
        "message",
        "key",
        "field",
        "refunded",
        "expires_at",
    }
)
# Contract (proto) field names -> the names the HTTP API uses.
_HTTP_FIELD_NAMES = {
    "salary_min_minor": "salary_range.min_minor",
    "salary_max_minor": "salary_range.max_minor",
    "salary_currency": "salary_range.currency",
    "payment_method_token": "payment.payment_method",
    "request_id": "Idempotency-Key",
}


def _http_field(name: str) -> str:
    if name.startswith("payment.expected_amount"):
        return "payment.amount" + name.removeprefix("payment.expected_amount")
    return _HTTP_FIELD_NAMES.get(name, name)


def _fields(metadata: Mapping[str, str]) -> dict[str, str]:
    """Field problems from ErrorInfo metadata: a JSON `fields` entry, or the field entries."""
    raw = metadata.get("fields")
    if raw:
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return {_http_field(str(k)): str(v) for k, v in parsed.items()}
    return {
        _http_field(k): v for k, v in metadata.items() if k != "fields" and k not in _NOT_FIELDS
    }


def _retry_after(raw: str | None) -> str | None:
    """A Retry-After value (whole seconds, rounded up) from metadata; None if missing or unusable."""
    try:
        seconds = math.ceil(float(raw or ""))
    except (ValueError, OverflowError):  # not a number, NaN or infinite
        return None
    return str(seconds) if seconds > 0 else None


def _has_error_info(error: RemoteError) -> bool:
    # from_rpc_error falls back to the status code name when the callee sent no ErrorInfo,
    # which means a transport fault (connection refused, deadline) rather than a domain answer.
    return error.reason != error.kind.name or bool(error.metadata)


def api_error_from_remote(error: RemoteError) -> ApiError:
    """The HTTP answer for an error returned by jobs, payments or wallet."""
    meta = error.metadata
    reason = error.reason
    if reason in _REASONS:
        status, code, message = _REASONS[reason]
    else:
        status, code, message = _KINDS.get(error.kind, _KINDS[ErrorKind.INTERNAL])
        if error.kind in _SAFE_MESSAGE_KINDS and _has_error_info(error) and error.message:
            message = error.message
    if reason == "PAYMENT_DECLINED":
        provider_code = meta.get("code") or meta.get("decline_code") or "card_declined"
        return ApiError(
            status, code, _DECLINE_MESSAGES.get(provider_code, message), code=provider_code
        )
    if reason == "INSUFFICIENT_FUNDS":
        return ApiError(status, code, message, code="insufficient_funds")
    if reason == "PAYMENT_TIMEOUT":
        txn = meta.get("payment_id") or meta.get("transaction_id")
        return ApiError(status, code, message, transactionId=txn, retry=True)
    if reason == "PAYMENT_PROVIDER_UNAVAILABLE":
        return ApiError(status, code, message, retry=True, headers={"Retry-After": "5"})
    if reason == "ALREADY_SUBSCRIBED":
        return ApiError(status, code, message, expiresAt=meta.get("expires_at") or None)
    if reason == "PLAN_NOT_FOUND":
        return ApiError(status, code, message, fields={"plan": "unknown plan"})
    if reason == "REQUEST_IN_PROGRESS":
        return ApiError(status, code, message, retry=True, headers={"Retry-After": "1"})
    if reason == "FEE_MISMATCH":
        fields = _fields(meta) or {"payment.amount": "does not match the posting fee"}
        return ApiError(status, code, error.message or message, fields=fields)
    if code == "VALIDATION_FAILED" or reason in ("TERMS_NOT_ACCEPTED", "TERMS_OUTDATED"):
        fields = _fields(meta)
        if _has_error_info(error) and error.message:
            message = error.message
        return ApiError(status, code, message, fields=fields or None)
    if reason == "INVALID_PAYMENT_DETAILS":
        fields = _fields(meta)
        if meta.get("field"):
            fields.setdefault(_http_field(meta["field"]), "invalid")
        return ApiError(status, code, message, code=meta.get("code") or None, fields=fields or None)
    if reason == "ACTIVATION_FAILED":
        return ApiError(status, code, message, refunded=meta.get("refunded") == "true" or None)
    if reason == "POSTING_BLOCKED":
        # PAY-14: the block lifts once the failed-payments window has passed.
        retry_after = _retry_after(meta.get("retry_after_seconds"))
        headers = {"Retry-After": retry_after} if retry_after else None
        return ApiError(status, code, message, retry=True, headers=headers)
    if status == 503:
        return ApiError(status, code, message, retry=True, headers={"Retry-After": "1"})
    if status == 504:
        return ApiError(status, code, message, retry=True)
    return ApiError(status, code, message)


def api_error_from_reason(reason: str) -> ApiError:
    """The HTTP answer for a failure known only by its reason (e.g. a job's failure_reason)."""
    kind = ErrorKind.FAILED_PRECONDITION
    return api_error_from_remote(RemoteError("", reason=reason, kind=kind, metadata={}))


# --- Request validation ---------------------------------------------------------------------------


def _field_name(loc: Sequence[str | int]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def _problem(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "json_invalid":
        return "malformed JSON"
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown field"
    # Pydantic messages name the rule, never the input (which may be a secret).
    return str(err.get("msg", "invalid")).removeprefix("Value error, ")


def api_error_from_validation(errors: Sequence[Mapping[str, Any]]) -> ApiError:
    """400 VALIDATION_FAILED from FastAPI/pydantic errors (malformed JSON included)."""
    fields: dict[str, str] = {}
    for err in errors:
        if err.get("type") == "json_invalid":
            fields["body"] = "malformed JSON"
            continue
        fields.setdefault(_field_name(err.get("loc", ())), _problem(err))
    if fields.get("body") == "malformed JSON":
        return validation_failed(fields, "The request body is not valid JSON")
    return validation_failed(fields)


_HTTP_CODES = {
    400: "VALIDATION_FAILED",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
}


def api_error_from_http(exc: StarletteHTTPException) -> ApiError:
    """Starlette's own HTTP errors (unknown route, wrong method, body too large) in PAY-11 shape."""
    code = _HTTP_CODES.get(exc.status_code, "INTERNAL_ERROR" if exc.status_code >= 500 else "ERROR")
    message = {
        404: "The resource was not found",
        405: "Method not allowed",
        413: "The request body is too large",
    }.get(exc.status_code, "The request could not be processed")
    return ApiError(exc.status_code, code, message, headers=exc.headers or None)


def internal_error() -> ApiError:
    return ApiError(500, "INTERNAL_ERROR", "Something went wrong on our side")


# --- Rendering ------------------------------------------------------------------------------------


def error_response(error: ApiError, request: Request | None = None) -> JSONResponse:
    """Render an ApiError, with headers the route prepared (e.g. RateLimit) when there is a request."""
    headers = dict(getattr(request.state, "response_headers", {}) or {}) if request else {}
    headers.update(error.headers)
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Route every expected exception through the one mapping above."""

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

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RemoteError, on_remote_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)


# Documented on every route that can fail (OpenAPI).
def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "VALIDATION_FAILED (with `fields`), INVALID_PAYMENT_DETAILS, IDEMPOTENCY_KEY_REQUIRED, ...",
        401: "UNAUTHENTICATED (missing, expired or invalid bearer token)",
        402: "PAYMENT_DECLINED (with `code`), INSUFFICIENT_FUNDS, INSUFFICIENT_CREDITS",
        403: "FORBIDDEN (the role may not do this)",
        404: "NOT_FOUND (also for objects of other users)",
        409: "ALREADY_SUBSCRIBED (with `expiresAt`), IDEMPOTENCY_KEY_IN_USE, INVALID_TRANSITION",
        422: "IDEMPOTENCY_KEY_REUSED (same key, other body)",
        413: "PAYLOAD_TOO_LARGE",
        429: "RATE_LIMITED, POSTING_BLOCKED (see Retry-After)",
        500: "INTERNAL_ERROR",
        502: "PAYMENT_PROVIDER_UNAVAILABLE",
        503: "SERVICE_UNAVAILABLE (retry later)",
        504: "PAYMENT_TIMEOUT (with `transactionId`, `retry: true`)",
    }
    return {s: {"model": ErrorBody, "description": descriptions[s]} for s in statuses}
