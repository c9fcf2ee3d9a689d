"""The gateway's edge observability: one SERVER span per HTTP request, HTTP and funnel metrics,
access logs, and the last-resort 500 for unexpected failures (generic body, trace only in the log).

Implemented as a pure ASGI middleware so the span's context is the one the route handlers (and the
gRPC calls they make through ServiceClient) run in: one trace from the HTTP edge through every hop.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hirepay_platform import tracing

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


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class EdgeMiddleware:
    """Span + metrics + access log around every HTTP request; last-resort 500 mapping."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.tracer = tracing.tracer("hirepay.gateway")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        parent = propagate.extract(headers)
        method = scope["method"]
        is_api = scope.get("path", "").startswith("/api/")
        started = time.perf_counter()
        status_holder: dict[str, Any] = {"status": 500, "started": False}
        token = otel_context.attach(parent)
        try:
            with self.tracer.start_as_current_span(
                f"HTTP {method}", kind=trace.SpanKind.SERVER
            ) as span:
                trace_id = format(span.get_span_context().trace_id, "032x")
                span.set_attribute("http.request.method", method)

                async def send_wrapper(message: Message) -> None:
                    if message["type"] == "http.response.start":
                        status_holder["status"] = message["status"]
                        status_holder["started"] = True
                        headers = list(message.get("headers", []))
                        headers.append((b"x-trace-id", trace_id.encode()))
                        headers.append((b"x-content-type-options", b"nosniff"))
                        names = {name.lower() for name, _ in headers}
                        # Payment and job data must never sit in a shared or browser cache.
                        if is_api and b"cache-control" not in names:
                            headers.append((b"cache-control", b"no-store"))
                        message["headers"] = headers
                    await send(message)

                try:
                    await self.app(scope, receive, send_wrapper)
                except Exception:
                    # Anything not mapped by the error handlers: log (masked), answer generically.
                    log.exception("unhandled error", extra={"fields": {"method": method}})
                    span.set_status(trace.StatusCode.ERROR)
                    if not status_holder["started"]:
                        await send_wrapper(
                            {
                                "type": "http.response.start",
                                "status": 500,
                                "headers": [(b"content-type", b"application/json")],
                            }
                        )
                        await send({"type": "http.response.body", "body": _INTERNAL_ERROR})
                route = _route_template(scope)
                status = status_holder["status"]
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(trace.StatusCode.ERROR)
                elapsed = time.perf_counter() - started
                HTTP_REQUESTS.labels(method, route, str(status)).inc()
                HTTP_LATENCY.labels(method, route).observe(elapsed)
                if route not in ("/healthz", "/metrics"):
                    log.info(
                        "%s %s %s",
                        method,
                        route,
                        status,
                        extra={"fields": {"duration_ms": round(elapsed * 1000, 1)}},
                    )
        finally:
            otel_context.detach(token)
