"""Prometheus metrics shared by every service: RPC counts and latency, and the /metrics endpoint."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from functools import partial
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


# The hot paths' counting (every RPC, both sides) with the work of prometheus_client's public
# `inc`/`observe` that cannot apply to them left out: a labelled child is always observable, an
# increment of one is never negative, and no exemplar is given. What remains is the very update
# `inc`/`observe` make: the series' value (its own lock, as before), and for a histogram the sum
# and the first bucket whose upper bound holds the amount (+Inf last). Each public call was four
# Python calls and three checks per count; these are one (issue 13). They reach the children's
# values (prometheus_client internals, pinned by uv.lock): tests/platform pins that what they
# count is exactly what `inc`/`observe` count.


def incrementer(series: Counter) -> Callable[[], None]:
    """`series.inc()` (a labelled child: metrics.child) as one call."""
    return partial(series._value.inc, 1)


def observer(series: Histogram) -> Callable[[float], None]:
    """`series.observe(amount)` (a labelled child: metrics.child) as one call."""
    return _Observe(series)


class _Observe:
    __slots__ = ("_bounds", "_buckets", "_sum")

    def __init__(self, series: Histogram) -> None:
        self._bounds = tuple(series._upper_bounds)
        self._buckets = tuple(series._buckets)
        self._sum = series._sum

    def __call__(self, amount: float) -> None:
        self._sum.inc(amount)
        # The first bound >= amount (the last is +Inf), as Histogram.observe picks it.
        self._buckets[bisect_left(self._bounds, amount)].inc(1)


# (counter or histogram, label values) -> the one-call count or observation of its series.
_counts: dict[tuple[MetricWrapperBase, tuple[str, ...]], Callable[[], None]] = {}
_observations: dict[tuple[MetricWrapperBase, tuple[str, ...]], Callable[[float], None]] = {}


def count(counter: Counter, *values: str) -> None:
    """`counter.labels(*values).inc()` (`counter.inc()` without values), its series looked up
    once per label values and counted in one call (child and incrementer): `labels` then `inc`
    are about ten Python calls (issue 13). Label values bounded as for `child`."""
    key = (counter, values)
    increment = _counts.get(key)
    if increment is None:
        increment = _counts[key] = incrementer(child(counter, *values) if values else counter)
    increment()


def observe(histogram: Histogram, amount: float, *values: str) -> None:
    """`histogram.labels(*values).observe(amount)`, as `count` counts."""
    key = (histogram, values)
    observation = _observations.get(key)
    if observation is None:
        observation = _observations[key] = observer(
            child(histogram, *values) if values else histogram
        )
    observation(amount)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Expose /metrics on its own port (a daemon thread; scraping never blocks the event loop).

    Loopback unless told otherwise: a pod sets <PREFIX>METRICS_HOST=0.0.0.0 for its scraper."""
    start_http_server(port, addr=host)
