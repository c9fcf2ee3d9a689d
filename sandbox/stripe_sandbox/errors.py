"""Errors in Stripe's wire shape (`{"error": {...}}`) with Stripe's HTTP status codes."""

from __future__ import annotations

from typing import Any

DOC_URL = "https://stripe.com/docs/error-codes/{}"


class StripeAPIError(Exception):
    """An error answered to an API client as Stripe would.

    `cacheable` says whether an idempotent request that ended in this error keeps the error as its
    saved result: Stripe saves results once an endpoint started executing, but not for requests
    that failed parameter validation or conflicted with a concurrent request.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        decline_code: str | None = None,
        extra: dict[str, Any] | None = None,
        cacheable: bool = True,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.decline_code = decline_code
        self.extra = extra or {}
        self.cacheable = cacheable
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body Stripe would answer."""
        error: dict[str, Any] = {}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = DOC_URL.format(self.code.replace("_", "-"))
        if self.decline_code is not None:
            error["decline_code"] = self.decline_code
        error["message"] = self.message
        if self.param is not None:
            error["param"] = self.param
        error.update(self.extra)
        error["type"] = self.type
        return {"error": error}


def invalid_request(
    message: str, *, code: str | None = None, param: str | None = None, status: int = 400
) -> StripeAPIError:
    """A refused request (400 invalid_request_error) after the endpoint started executing."""
    return StripeAPIError(message, status=status, code=code, param=param)


def invalid_param(message: str, *, param: str, code: str = "parameter_invalid") -> StripeAPIError:
    """A parameter that failed validation; not kept as an idempotent result."""
    return StripeAPIError(message, code=code, param=param, cacheable=False)


def missing_param(param: str) -> StripeAPIError:
    """A required parameter that was not sent."""
    return StripeAPIError(
        f"Missing required param: {param}.",
        code="parameter_missing",
        param=param,
        cacheable=False,
    )


def no_such(kind: str, object_id: str, *, param: str | None = None) -> StripeAPIError:
    """`No such customer: 'cus_x'`: 404 for a path id, 400 when a parameter names it."""
    return StripeAPIError(
        f"No such {kind}: '{object_id}'",
        status=400 if param else 404,
        code="resource_missing",
        param=param or "id",
    )


def unexpected_state(message: str, *, extra: dict[str, Any] | None = None) -> StripeAPIError:
    """An operation the object's current status does not allow."""
    return StripeAPIError(message, code="payment_intent_unexpected_state", extra=extra)


def authentication_error(message: str) -> StripeAPIError:
    """401: missing or invalid API key (Stripe uses type invalid_request_error here)."""
    return StripeAPIError(
        message,
        status=401,
        cacheable=False,
        headers={"WWW-Authenticate": 'Basic realm="Stripe"'},
    )


def api_error(status: int, message: str | None = None) -> StripeAPIError:
    """A 5xx `api_error`, never kept as an idempotent result."""
    return StripeAPIError(
        message or "An unknown error occurred while processing your request (sandbox fault).",
        status=status,
        type="api_error",
        cacheable=False,
    )


def idempotency_mismatch(key: str) -> StripeAPIError:
    """The key was used before with other parameters or on another endpoint."""
    return StripeAPIError(
        "Keys for idempotent requests can only be used with the same parameters they were "
        f"first used with. Try using a key other than '{key}' if you meant to execute a "
        "different request.",
        type="idempotency_error",
        cacheable=False,
    )


def idempotency_in_flight() -> StripeAPIError:
    """409: a request with the same key is still being executed."""
    return StripeAPIError(
        "There is currently another in-progress request using this Idempotent Key (that "
        "probably means you submitted twice, and the other request is still going through): "
        "Please try again later.",
        status=409,
        type="idempotency_error",
        code="idempotency_key_in_use",
        cacheable=False,
    )
