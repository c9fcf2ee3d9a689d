"""Prometheus metrics shared by every service: RPC counts and latency, and the /metrics endpoint."""

from __future__ import annotations

from typing import Any, TypeVar

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)

RPC_REQUESTS = Counter(
    "hirepay_rpc_requests_total",
    "gRPC calls handled, by service, method and status code.",
    ["service", "method", "code"],
)
RPC_LATENCY = Histogram(
    "hirepay_rpc_duration_seconds",
    "gRPC handling latency, by service and method.",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CLIENT_REQUESTS = Counter(
    "hirepay_rpc_client_requests_total",
    "Outgoing gRPC calls, by target service, method and status code.",
    ["target", "method", "code"],
)

DEPENDENCY_UP = Gauge(
    "hirepay_dependency_up",
    "1 while the service's dependency (its database) passes the periodic readiness check, else 0.",
    ["service", "dependency"],
)


# (metric, label values) -> its child. `labels()` validates, stringifies and looks the values up
# under a lock on every call; a child, once made, is the same object for the life of the
# registry's metric (nothing here ever removes one), so looking it up once per label set counts
# into the very same series (issue 13). Bounded as Prometheus's own series are: label values are
# method names, status codes and route templates, never request data.
_children: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}


def child(metric: M, *values: str) -> M:
    """`metric.labels(*values)`, remembered: the hot paths (every RPC, every HTTP request) count
    through this."""
    key = (metric, values)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*values)
    return found


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Expose /metrics on its own port (a daemon thread; scraping never blocks the event loop).

    Loopback unless told otherwise: a pod sets <PREFIX>METRICS_HOST=0.0.0.0 for its scraper."""
    start_http_server(port, addr=host)
