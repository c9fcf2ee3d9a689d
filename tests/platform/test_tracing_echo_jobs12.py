"""A call continued from a traceparent alone makes its own calls carry that traceparent without
the propagator's inject (issue 13: about 20 Python calls per posting in jobs, whose request makes
two calls to payments in the gateway's trace): exactly what inject would write. Any other carrier
(a tracestate, baggage, an unsampled or padded traceparent) or a propagator that writes more goes
through inject as before."""

from __future__ import annotations

import pstats
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from hirepay_platform import tracing
from tests.support.python_calls import profiled


@pytest.fixture
def textmap() -> Iterator[None]:
    """The default W3C propagators (trace context and baggage), the process's put back after."""
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    )
    yield
    propagate.set_global_textmap(before)


def _traceparent(flags: str = "01") -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-{flags}"


def _injected(ctx: Any) -> tuple[tuple[str, str], ...]:
    carrier: dict[str, str] = {}
    propagate.get_global_textmap().inject(carrier, ctx)
    return tuple(carrier.items())


def _continued(metadata: list[tuple[str, str | bytes]]) -> tuple[Any, list[Any], set[str]]:
    """The context a call with `metadata` runs in, what two calls made in it send, and the names
    of the functions called for those two calls (cProfile)."""
    ctx = tracing.incoming_context(metadata)
    token = otel_context.attach(ctx)
    try:
        with profiled() as profile:
            sent = [tracing.outgoing_context(), tracing.outgoing_context()]
    finally:
        otel_context.detach(token)
    called = {name for (_, _, name) in pstats.Stats(profile).stats}  # type: ignore[attr-defined]
    return ctx, sent, called


def test_a_call_continued_from_a_traceparent_alone_sends_it_on_without_inject(
    textmap: None,
) -> None:
    tracing.incoming_context([("traceparent", _traceparent())])  # the propagator checked once
    for _ in range(3):
        parent = _traceparent()
        ctx, sent, called = _continued([("authorization", "Bearer x"), ("traceparent", parent)])
        span = trace.get_current_span(ctx).get_span_context()
        assert span.trace_id == int(parent[3:35], 16) and span.is_remote
        assert sent == [(("traceparent", parent),)] * 2
        assert sent[0] == _injected(ctx)  # the propagator's own output, to the character
        assert "inject" not in called, called


@pytest.mark.parametrize(
    "extra",
    [
        [("tracestate", "vendor=jobs12")],
        [("baggage", "tenant=1")],
    ],
)
def test_a_traceparent_with_more_context_goes_through_inject(
    textmap: None, extra: list[tuple[str, str]]
) -> None:
    parent = _traceparent()
    ctx, sent, called = _continued([("traceparent", parent), *extra])
    assert trace.get_current_span(ctx).get_span_context().trace_id == int(parent[3:35], 16)
    assert sent == [_injected(ctx)] * 2
    assert "inject" in called
    assert dict(sent[0])["traceparent"] == parent
    assert len(sent[0]) == 2  # the tracestate or the baggage carried on


@pytest.mark.parametrize("written", ["unsampled", "padded"])
def test_a_traceparent_not_written_as_inject_writes_it_goes_through_inject(
    textmap: None, written: str
) -> None:
    parent = _traceparent("00") if written == "unsampled" else f" {_traceparent()}\t"
    ctx, sent, called = _continued([("traceparent", parent)])
    assert trace.get_current_span(ctx).get_span_context().trace_id == int(parent.strip()[3:35], 16)
    assert sent == [_injected(ctx)] * 2
    assert "inject" in called
    assert sent[0] == (("traceparent", parent.strip()),)


class _StampingPropagator(TraceContextTextMapPropagator):
    """Injects a field of its own beside the traceparent."""

    def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
        super().inject(carrier, context)
        carrier["x-stamp"] = "1"


def test_a_propagator_that_writes_more_goes_through_inject() -> None:
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(_StampingPropagator())
    try:
        parent = _traceparent()
        ctx, sent, called = _continued([("traceparent", parent)])
        assert sent == [_injected(ctx)] * 2
        assert dict(sent[0]) == {"traceparent": parent, "x-stamp": "1"}
        assert "inject" in called
    finally:
        propagate.set_global_textmap(before)
