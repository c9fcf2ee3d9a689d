"""deploy/prometheus/alerts.yml (and the Grafana dashboard's queries) match on labels and label
values the code really exports, and every alert has a `promtool test rules` case
(alerts.test.yml) showing that it can fire.

A label the metric does not carry, or a value the code never sets (an `outcome` renamed, a
gRPC code misspelt), makes a selector match nothing: the alert would stay silent forever while
promtool, which knows nothing of the code, still passes."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
import yaml

from jobs.domain.audit import Check
from tests.deploy.test_grafana_dashboard import (
    TARGET_LABELS,
    grouping_labels,
    queries,
    registered_series,
    series_in,
)
from tests.deploy.test_manifests import alert_rules

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"
# Where the label values of hirepay_ metrics are set.
CODE_ROOTS = [REPO / "libs" / "hirepay_platform", REPO / "services"]
MATCHER = re.compile(r'([a-z_][a-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def exprs() -> list[tuple[str, str]]:
    return [(rule["alert"], rule["expr"]) for rule in alert_rules()]


def code_literals() -> set[str]:
    """Every double- or single-quoted string literal in the production code."""
    found: set[str] = set()
    for root in CODE_ROOTS:
        for path in root.rglob("*.py"):
            if "tests" in path.parts or "migrations" in path.parts:
                continue
            found.update(re.findall(r"[\"']([\w.]+)[\"']", path.read_text()))
    return found


def scrape_jobs() -> list[str]:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    return [job["job_name"] for job in config["scrape_configs"]]


def known_values(label: str, literals: set[str]) -> set[str] | None:
    """The values the code can give `label`, or None where any value is possible."""
    if label == "code":
        return {code.name for code in grpc.StatusCode}
    if label == "check":
        return {check.value for check in Check}
    if label in {"le", "instance", "pod", "app", "namespace"}:
        return None
    return literals


def alternatives(op: str, value: str) -> list[str]:
    """The values a matcher names: `a|b` of a regex, or the one value; none for a pattern."""
    if op in ("=~", "!~"):
        if re.search(r"[.*+?()\[\]]", value):
            return []
        return value.split("|")
    return [value]


@pytest.mark.parametrize(("alert", "expr"), exprs())
def test_every_alert_matches_labels_its_metrics_carry(alert: str, expr: str) -> None:
    known = registered_series()
    names = series_in(expr)
    assert names, alert
    available = set(TARGET_LABELS)
    for name, selector in names:
        assert name in known, f"{alert}: {name} is not registered by any module"
        labels = known[name] | TARGET_LABELS
        available |= labels
        for label, _, _ in MATCHER.findall(selector):
            assert label in labels, f"{alert}: {name} has no label {label!r}"
    assert grouping_labels(expr) <= available, alert


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric, selector body with its quoted values) of every `name{...}` in the expression."""
    return re.findall(r"\b([a-zA-Z_][a-zA-Z0-9_]*)\s*\{([^}]*)\}", expr)


@pytest.mark.parametrize(
    ("alert", "expr"), [*exprs(), *((f"dashboard {i}", q) for i, q in enumerate(queries()))]
)
def test_every_matched_label_value_is_one_the_code_sets(alert: str, expr: str) -> None:
    """The alerts' matchers, and the Grafana dashboard's (its panels would stay empty)."""
    literals = code_literals()
    found = selectors(expr)
    assert {name for name, _ in found} <= {name for name, _ in series_in(expr)}, alert
    for name, selector in found:
        for label, op, value in MATCHER.findall(selector):
            if label == "job":
                assert any(re.fullmatch(value, job) for job in scrape_jobs()), (alert, value)
                continue
            values = known_values(label, literals)
            if values is None:
                continue
            for one in alternatives(op, value):
                assert one in values, f"{alert}: {name}{{{label}}} is never {one!r} in the code"


def test_every_alert_has_a_promtool_case() -> None:
    """Each alert is fired (or held back) by at least one case of alerts.test.yml."""
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())
    tested = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"]}
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    names = {rule["alert"] for rule in alert_rules()}
    assert names - tested == set(), "alerts without a promtool case"
    assert names - fired == set(), "alerts no promtool case shows firing"


def test_the_value_check_is_real() -> None:
    """A misspelt outcome and an unknown gRPC code are caught."""
    literals = code_literals()
    assert "unavailable" in literals and "timeout" in literals
    assert "unavialable" not in literals
    assert "INTERNAL_ERROR" not in known_values("code", literals)  # type: ignore[operator]
