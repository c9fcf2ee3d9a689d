"""Errors in Razorpay's wire shape (`{"error": {"code", "description", "source", "step",
"reason", "metadata", "field"}}`) with Razorpay's status codes; the SDK maps `code` to
`BadRequestError`, `GatewayError` or `ServerError`."""

from __future__ import annotations

import json
from typing import Any

from sandbox_kit.faults import ErrorReply


class RazorpayError(Exception):
    """An error answered to an API client as Razorpay would."""

    def __init__(
        self,
        description: str,
        *,
        status: int = 400,
        code: str = "BAD_REQUEST_ERROR",
        field: str | None = None,
        source: str = "NA",
        step: str = "NA",
        reason: str = "NA",
        metadata: dict[str, Any] | None = None,
        keep: bool = True,
    ) -> None:
        super().__init__(description)
        self.description = description
        self.status = status
        self.code = code
        self.field = field
        self.source = source
        self.step = step
        self.reason = reason
        self.metadata = metadata or {}
        self.keep = keep

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": self.code,
            "description": self.description,
            "source": self.source,
            "step": self.step,
            "reason": self.reason,
            "metadata": self.metadata,
        }
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


def invalid(description: str, field: str | None = None) -> RazorpayError:
    """Input validation failed; never kept for an idempotency key."""
    return RazorpayError(
        description,
        field=field,
        source="business",
        step="payment_initiation",
        reason="input_validation_failed",
        keep=False,
    )


def refused(description: str, field: str | None = None) -> RazorpayError:
    """A business rule refused the request (kept for an idempotency key)."""
    return RazorpayError(
        description, field=field, source="business", reason="input_validation_failed"
    )


def not_found() -> RazorpayError:
    return RazorpayError("The id provided does not exist", keep=False)


def render_server_error(status: int, message: str | None) -> ErrorReply:
    """The body of a 5xx, for faults and unexpected failures (the SDK raises ServerError)."""
    error = RazorpayError(
        message or "The server encountered an error. The incident has been reported to admins.",
        status=status,
        code="SERVER_ERROR",
    )
    return ErrorReply(json.dumps(error.body()).encode())
