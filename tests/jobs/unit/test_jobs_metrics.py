"""The jobs service's metric helpers count into the very series Prometheus exposes (OPS-1)."""

from __future__ import annotations

from prometheus_client import REGISTRY

from jobs.service_layer import metrics


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_count_adds_one_to_the_series_of_its_labels():
    labels = {"result": "completed", "reason": "", "method": "card"}
    before = _sample("hirepay_jobs_saga_outcomes_total", labels)
    other = _sample("hirepay_jobs_saga_outcomes_total", {**labels, "method": "credits"})
    metrics.count(metrics.SAGA_OUTCOMES, "completed", "", "card")
    metrics.count(metrics.SAGA_OUTCOMES, "completed", "", "card")
    assert _sample("hirepay_jobs_saga_outcomes_total", labels) == before + 2
    assert _sample("hirepay_jobs_saga_outcomes_total", {**labels, "method": "credits"}) == other


def test_observe_adds_to_the_histogram_of_its_labels():
    labels = {"result": "metrics-test"}
    metrics.observe(metrics.SAGA_DURATION, 0.3, "metrics-test")
    metrics.observe(metrics.SAGA_DURATION, 7.0, "metrics-test")
    assert _sample("hirepay_jobs_saga_duration_seconds_count", labels) == 2
    assert _sample("hirepay_jobs_saga_duration_seconds_sum", labels) == 7.3
    assert _sample("hirepay_jobs_saga_duration_seconds_bucket", {**labels, "le": "0.25"}) == 0
    assert _sample("hirepay_jobs_saga_duration_seconds_bucket", {**labels, "le": "0.5"}) == 1
    assert _sample("hirepay_jobs_saga_duration_seconds_bucket", {**labels, "le": "10.0"}) == 2
