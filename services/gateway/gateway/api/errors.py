"""The PAY-11 error contract: the one error type of the edge, its JSON body, and the errors the
gateway raises itself (auth, validation, framework errors).

`{"error": CODE, "message": text, "code": provider_code?, ...}`: backend errors are mapped to it in
api/backend_errors.py, and every ApiError is rendered once by entrypoints/error_handlers.py. Messages
of unexpected failures are generic: no stack trace, internal address or secret reaches a client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from hirepay_platform.reasons import FailureReason


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
    """An HTTP error in the PAY-11 shape; raised anywhere, rendered once (entrypoints/error_handlers)."""

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
        self.error = str(error)  # a FailureReason member becomes its plain code
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
        FailureReason.VALIDATION_FAILED,
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


# --- Framework and request validation errors ------------------------------------------------------


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
    400: FailureReason.VALIDATION_FAILED,
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


# Documented on every route that can fail (OpenAPI).
def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "VALIDATION_FAILED (with `fields`; also NUL or invalid Unicode anywhere in the request,"
        " JSON nested too deeply), INVALID_PAYMENT_DETAILS, IDEMPOTENCY_KEY_REQUIRED, ...",
        401: "UNAUTHENTICATED (missing, expired or invalid bearer token)",
        402: "PAYMENT_DECLINED (with `code`), INSUFFICIENT_FUNDS, INSUFFICIENT_CREDITS",
        403: "FORBIDDEN (the role may not do this)",
        404: "NOT_FOUND (also for objects of other users)",
        409: "ALREADY_SUBSCRIBED (with `expiresAt`), IDEMPOTENCY_KEY_IN_USE, INVALID_TRANSITION,"
        " JOB_ALREADY_TAKEN, ESCROW_FROZEN, DISPUTE_ALREADY_RESOLVED, SETTLEMENT_EXCEEDS_OWED",
        422: "IDEMPOTENCY_KEY_REUSED (same key, other body)",
        413: "PAYLOAD_TOO_LARGE (the body is above GATEWAY_MAX_BODY_BYTES)",
        429: "RATE_LIMITED, POSTING_BLOCKED (see Retry-After)",
        500: "INTERNAL_ERROR",
        502: "PAYMENT_PROVIDER_UNAVAILABLE",
        503: "SERVICE_UNAVAILABLE (retry later)",
        504: "PAYMENT_TIMEOUT (with `transactionId`, `retry: true`), UPSTREAM_TIMEOUT",
    }
    return {s: {"model": ErrorBody, "description": descriptions[s]} for s in statuses}
