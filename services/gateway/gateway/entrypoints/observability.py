"""The gateway's edge observability: HTTP and funnel metrics, access logs, the trace id and
security headers of every response, and the last-resort 500 for unexpected failures (generic body,
trace only in the log).

The SERVER span of each request is the OpenTelemetry FastAPI instrumentation's (outermost, see
tracing.instrument_fastapi; without exported spans only the W3C context, no span): this pure ASGI
middleware runs inside it, so the route handlers (and the gRPC calls they make through
ServiceClient) share its context: one trace from the HTTP edge through every hop.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from opentelemetry import trace
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hirepay_platform.metrics import count, observe
from hirepay_platform.tracing import TRACE_ID_KEY

log = logging.getLogger("gateway.access")

HTTP_REQUESTS = Counter(
    "hirepay_http_requests_total",
    "HTTP requests answered by the gateway, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "hirepay_http_request_duration_seconds",
    "HTTP request latency at the gateway, by method and route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
# OPS-1 funnel as the edge sees it: draft -> preview -> payment started -> paid/pending/failed.
FUNNEL = Counter(
    "hirepay_gateway_funnel_total",
    "Pay-to-post funnel steps seen at the edge: draft_saved, preview, payment_started, "
    "active, pending_payment, failed.",
    ["step"],
)
CWP_STARTED = Counter(
    "hirepay_gateway_create_with_payment_started_total",
    "create-with-payment requests that passed auth, validation and the rate limit.",
)
CWP_SUCCEEDED = Counter(
    "hirepay_gateway_create_with_payment_succeeded_total",
    "create-with-payment requests answered 201 (active) or 202 (pending_payment).",
    ["status", "replayed"],
)
CWP_FAILED = Counter(
    "hirepay_gateway_create_with_payment_failed_total",
    "create-with-payment requests that failed, by PAY-11 error code.",
    ["reason"],
)
RATE_LIMITED = Counter(
    "hirepay_gateway_rate_limited_total", "Requests refused by a rate limit.", ["policy"]
)
WEBHOOKS = Counter(
    "hirepay_gateway_webhooks_total",
    "Provider webhook deliveries received, by provider and HTTP status answered.",
    ["provider", "status"],
)

_INTERNAL_ERROR = json.dumps(
    {"error": "INTERNAL_ERROR", "message": "Something went wrong on our side"}
).encode()


# Any other method name a client sends is one label value, so a client cannot mint series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"

# JSON answers are never framed and load nothing; the HTML pages (Swagger UI, ReDoc) load their
# bundles from the CDN FastAPI uses, and pages may set a stricter policy of their own.
API_CSP = b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
HTML_CSP = (
    b"default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    b"style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    b"font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
    b"https://cdn.redoc.ly; connect-src 'self'; worker-src blob:; frame-ancestors 'none'; "
    b"base-uri 'none'; form-action 'self'"
)
HSTS = b"max-age=31536000; includeSubDomains"


def security_headers(
    headers: list[tuple[bytes, bytes]], *, is_api: bool, tls: bool
) -> list[tuple[bytes, bytes]]:
    """`headers` (a list of the answer's own) with the security headers every answer carries
    (kept when a route set its own, e.g. a page's stricter CSP)."""
    # Each name lowered once, the first value of a repeated one kept (reversed: the first one is
    # written last): one pass, not a set of the names and then a search for the content type
    # (issue 13).
    first = {name.lower(): value for name, value in reversed(headers)}
    html = first.get(b"content-type", b"").startswith(b"text/html")
    wanted = _WANTED[(html, tls, is_api)]
    return headers + [(name, value) for name, value in wanted if name not in first]


def _wanted(html: bool, tls: bool, is_api: bool) -> tuple[tuple[bytes, bytes], ...]:
    """The security headers an answer carries, in their order."""
    wanted = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"content-security-policy", HTML_CSP if html else API_CSP),
    ]
    if tls:
        wanted.append((b"strict-transport-security", HSTS))
    # Payment and job data must never sit in a shared or browser cache.
    if is_api:
        wanted.append((b"cache-control", b"no-store"))
    return tuple(wanted)


# Made once for each kind of answer (HTML or not, TLS or not, API or not), not per request.
_WANTED = {
    (html, tls, is_api): _wanted(html, tls, is_api)
    for html in (False, True)
    for tls in (False, True)
    for is_api in (False, True)
}


class EdgeMiddleware:
    """Metrics + access log + trace id and security headers around every HTTP request, inside the
    request's SERVER span; last-resort 500."""

    def __init__(self, app: ASGIApp, behind_tls: bool = False) -> None:
        self.app = app
        self.behind_tls = behind_tls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The metric and log label of the method: any name but the known ones is OTHER (a client
        # cannot mint series). (In line, as the route template below: a call each per request.)
        method = scope["method"]
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD
        is_api = scope.get("path", "").startswith("/api/")
        tls = self.behind_tls or scope.get("scheme") == "https"
        started = time.perf_counter()
        status_holder: dict[str, Any] = {"status": 500, "started": False}
        # The trace's id as the header's bytes: as TraceContextMiddleware (around this) found it,
        # else the current span's (inside the OpenTelemetry instrumentation's span), written at
        # once (an operator, not format() and encode()).
        trace_id = scope.get(TRACE_ID_KEY)
        if trace_id is None:
            trace_id = b"%032x" % trace.get_current_span().get_span_context().trace_id

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                message["headers"] = security_headers(
                    [*message.get("headers", ()), (b"x-trace-id", trace_id)], is_api=is_api, tls=tls
                )
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            # Anything not mapped by the error handlers: log (masked), answer generically.
            log.exception("unhandled error", extra={"fields": {"method": method}})
            trace.get_current_span().set_status(trace.StatusCode.ERROR)
            if not status_holder["started"]:
                await send_wrapper(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": _INTERNAL_ERROR})
        # The route template FastAPI's routing (or a direct answer) put in the scope.
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        status = status_holder["status"]
        elapsed = time.perf_counter() - started
        count(HTTP_REQUESTS, method, route, str(status))
        observe(HTTP_LATENCY, elapsed, method, route)
        # The access log's arguments only when it is written (issue 13: not at WARNING).
        if route not in ("/healthz", "/metrics") and log.isEnabledFor(logging.INFO):
            log.info(
                "%s %s %s",
                method,
                route,
                status,
                extra={"fields": {"duration_ms": round(elapsed * 1000, 1)}},
            )
