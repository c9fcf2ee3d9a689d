"""A provider call gets its CLIENT span only when the process exports spans (issue 13: a span
that goes nowhere cost as much CPU as the rest of the call's bookkeeping); its record and
metrics are kept either way."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from payments.service_layer.handlers import provider_calls
from payments.service_layer.handlers.provider_calls import CallRecord, call


class RecordingTracer:
    def __init__(self) -> None:
        self.spans: list[str] = []

    @contextlib.contextmanager
    def start_as_current_span(self, name: str, **kw: Any) -> Iterator[Any]:
        self.spans.append(name)
        yield contextlib.nullcontext()


@pytest.mark.parametrize("exporting", [True, False])
async def test_a_span_only_when_spans_are_exported(
    monkeypatch: pytest.MonkeyPatch, exporting: bool
) -> None:
    tracer = RecordingTracer()
    monkeypatch.setattr(provider_calls, "_TRACER", tracer)
    monkeypatch.setattr(provider_calls.tracing, "exporting", lambda: exporting)
    records: list[CallRecord] = []

    async def authorize() -> str:
        return "pi_1"

    assert await call(records, "authorize", "key-1", authorize) == "pi_1"
    assert tracer.spans == (["provider.authorize"] if exporting else [])
    assert [(r.operation, r.idempotency_key, r.outcome) for r in records] == [
        ("authorize", "key-1", "ok")
    ]
