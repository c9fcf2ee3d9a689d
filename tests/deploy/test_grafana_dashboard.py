"""deploy/grafana/hirepay-dashboard.json queries only metrics (and labels) the code registers today."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "hirepay-dashboard.json"
# Source roots on sys.path (pyproject's dev-mode-dirs) whose modules may register metrics.
SOURCE_ROOTS = [REPO / "libs", *sorted((REPO / "services").glob("*/"))]
REGISTRATION = re.compile(r"\b(?:Counter|Gauge|Histogram|Summary)\(\s*[\"']hirepay_")
# Labels Prometheus adds to every scraped series (prometheus.yml's relabelling).
TARGET_LABELS = {"job", "instance", "app", "pod", "namespace"}
# Series Prometheus makes itself.
BUILTIN = {"up": set()}
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "increase", "irate", "histogram_quantile",
    "by", "without", "on", "ignoring", "and", "or", "unless", "bool", "offset",
}  # fmt: skip


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def queries() -> list[str]:
    return [
        target["expr"]
        for panel in load_dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def import_metric_modules() -> None:
    """Import every module that registers a hirepay_ metric, wherever the services keep it."""
    for root in SOURCE_ROOTS:
        for path in root.rglob("*.py"):
            if "migrations" in path.parts or not REGISTRATION.search(path.read_text()):
                continue
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            importlib.import_module(module)


def registered_series() -> dict[str, set[str]]:
    """Every series name the code can expose -> the labels it carries."""
    import_metric_modules()
    series: dict[str, set[str]] = {}
    for name, collector in REGISTRY._names_to_collectors.items():
        labels = set(getattr(collector, "_labelnames", ()))
        if name.endswith("_bucket"):
            labels.add("le")
        series[name] = labels
    return {**series, **BUILTIN}


def series_in(expr: str) -> list[tuple[str, str]]:
    """(metric name, its selector body) for every series selector in a PromQL expression."""
    # Drop what is not a series name: grouping clauses, range durations, quoted label values.
    bare = re.sub(r"\b(by|without)\s*\([^)]*\)", " ", expr)
    bare = re.sub(r"\[[^\]]*\]", " ", bare)
    bare = re.sub(r'"[^"]*"', '""', bare)
    found = []
    for match in re.finditer(r"(?<![\w$.])([a-zA-Z_][a-zA-Z0-9_]*)\s*(\{[^}]*\})?", bare):
        name, selector = match.group(1), match.group(2) or ""
        if name in PROMQL_WORDS or bare[match.end() :].lstrip().startswith("("):
            continue
        found.append((name, selector))
    return found


def grouping_labels(expr: str) -> set[str]:
    return {
        label.strip()
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
        for label in group.split(",")
        if label.strip()
    }


def test_dashboard_is_grafana_json_with_panels() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] and dashboard["title"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["description"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


@pytest.mark.parametrize("expr", queries())
def test_every_queried_metric_is_registered_by_the_code(expr: str) -> None:
    known = registered_series()
    names = series_in(expr)
    assert names, expr
    for name, selector in names:
        assert name in known, f"{name} is not registered by any module (query: {expr})"
        labels = known[name] | TARGET_LABELS
        for label in re.findall(r"([a-z_][a-z0-9_]*)\s*(?:=~|!~|!=|=)", selector):
            assert label in labels, f"{name} has no label {label!r}"


@pytest.mark.parametrize("expr", queries())
def test_grouping_labels_exist_on_the_queried_metrics(expr: str) -> None:
    known = registered_series()
    available = set(TARGET_LABELS)
    for name, _ in series_in(expr):
        available |= known.get(name, set())
    assert grouping_labels(expr) <= available, expr


def test_dashboard_covers_the_ops1_families() -> None:
    """Traffic, errors, latency, payments, provider, webhooks, outbox, sagas and the ledger."""
    used = {name for expr in queries() for name, _ in series_in(expr)}
    for name in (
        "hirepay_http_requests_total",
        "hirepay_rpc_requests_total",
        "hirepay_rpc_duration_seconds_bucket",
        "hirepay_payment_attempts_total",
        "hirepay_provider_call_duration_seconds_bucket",
        "hirepay_webhook_events_total",
        "hirepay_payments_outbox_backlog",
        "hirepay_jobs_stuck_sagas",
        "hirepay_jobs_saga_outcomes_total",
        "hirepay_wallet_transfers_total",
    ):
        assert name in used, name


def test_an_unregistered_metric_is_caught() -> None:
    """The checker is real: a name no code registers is reported."""
    known = registered_series()
    assert [n for n, _ in series_in("sum(rate(hirepay_made_up_total[5m]))") if n not in known]
