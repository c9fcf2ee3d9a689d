"""Errors in PayPal's REST wire shape (`name`, `message`, `debug_id`, `details[]`, `links[]`)
with PayPal's HTTP status codes."""

from __future__ import annotations

import json
from typing import Any

from sandbox_kit import ids
from sandbox_kit.faults import ErrorReply

_MESSAGES = {
    400: (
        "INVALID_REQUEST",
        "Request is not well-formed, syntactically incorrect, or violates schema.",
    ),
    401: (
        "AUTHENTICATION_FAILURE",
        "Authentication failed due to invalid authentication credentials or a missing Authorization header.",
    ),
    403: ("NOT_AUTHORIZED", "Authorization failed due to insufficient permissions."),
    404: ("RESOURCE_NOT_FOUND", "The specified resource does not exist."),
    422: (
        "UNPROCESSABLE_ENTITY",
        "The requested action could not be performed, semantically incorrect, or failed business validation.",
    ),
    500: ("INTERNAL_SERVER_ERROR", "An internal server error has occurred."),
    502: ("BAD_GATEWAY", "The server received an invalid response from an upstream server."),
    503: ("SERVICE_UNAVAILABLE", "Service Unavailable."),
    504: (
        "GATEWAY_TIMEOUT",
        "The server did not receive a timely response from an upstream server.",
    ),
}
DOC_URL = "https://developer.paypal.com/api/rest/reference/orders/v2/errors/#{}"


def debug_id() -> str:
    return ids.random_token(13, "0123456789abcdef")


class PayPalError(Exception):
    """An error answered to an API client as PayPal would.

    `keep` says whether an idempotent request (PayPal-Request-Id) keeps it as its saved result:
    business refusals are kept, schema errors are not (the caller fixes and retries).
    """

    def __init__(
        self,
        status: int,
        issue: str | None = None,
        description: str | None = None,
        *,
        field: str | None = None,
        value: str | None = None,
        location: str = "body",
        keep: bool = True,
        links: list[dict[str, str]] | None = None,
    ) -> None:
        name, message = _MESSAGES.get(status, _MESSAGES[500])
        super().__init__(f"{name}: {issue or message}")
        self.status = status
        self.name = name
        self.message = message
        self.issue = issue
        self.description = description
        self.field = field
        self.value = value
        self.location = location
        self.keep = keep
        self.links = links or []

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name, "message": self.message, "debug_id": debug_id()}
        if self.issue:
            detail: dict[str, Any] = {}
            if self.field is not None:
                detail["field"] = self.field
            if self.value is not None:
                detail["value"] = self.value
            if self.field is not None:
                detail["location"] = self.location
            detail["issue"] = self.issue
            detail["description"] = self.description or self.issue.replace("_", " ").lower()
            body["details"] = [detail]
        links = [
            *self.links,
            {
                "href": DOC_URL.format(f"error-{self.issue or self.name}"),
                "rel": "information_link",
                "method": "GET",
            },
        ]
        body["links"] = links
        return body


def invalid(field: str, issue: str, description: str, value: str | None = None) -> PayPalError:
    """400 INVALID_REQUEST about one body field (JSON pointer), never kept for a request id."""
    return PayPalError(400, issue, description, field=field, value=value, keep=False)


def missing(field: str) -> PayPalError:
    return invalid(field, "MISSING_REQUIRED_PARAMETER", "A required field / parameter is missing.")


def not_found(field: str, value: str) -> PayPalError:
    return PayPalError(
        404,
        "INVALID_RESOURCE_ID",
        "Specified resource ID does not exist. Please check the resource ID and try again.",
        field=field,
        value=value,
        location="path",
    )


def unprocessable(issue: str, description: str, **kwargs: Any) -> PayPalError:
    return PayPalError(422, issue, description, **kwargs)


def render_server_error(status: int, message: str | None) -> ErrorReply:
    """The body of a 5xx, for faults and unexpected failures."""
    name, default = _MESSAGES.get(status, _MESSAGES[500])
    body = {
        "name": name,
        "message": message or default,
        "debug_id": debug_id(),
        "links": [{"href": DOC_URL.format(name), "rel": "information_link", "method": "GET"}],
    }
    return ErrorReply(json.dumps(body).encode(), (("Paypal-Debug-Id", body["debug_id"]),))
