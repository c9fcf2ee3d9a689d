"""tracing.incoming_context picks the propagator's fields out of the metadata without a call per
entry (issue 13): binary values are never read as a trace context, the fields' order in the
metadata does not matter, and a trace is continued with its tracestate."""

from __future__ import annotations

from opentelemetry import trace

from hirepay_platform import tracing

_PARENT = "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _span(metadata: list[tuple[str, str | bytes]]) -> trace.SpanContext:
    return trace.get_current_span(tracing.incoming_context(metadata)).get_span_context()


def test_a_binary_value_of_a_field_name_begins_a_new_trace() -> None:
    begun = {_span([("traceparent", _PARENT.encode()), ("a-bin", b"\x00")]).trace_id for _ in "ab"}
    assert 0x1AF7651916CD43DD8448EB211C80319C not in begun
    assert len(begun) == 2  # each call its own trace


def test_fields_in_any_order_continue_the_trace_with_its_state() -> None:
    state = ("tracestate", "vendor=pay9b")
    first = tracing.incoming_context([state, ("x-other", "1"), ("traceparent", _PARENT)])
    again = tracing.incoming_context([("traceparent", _PARENT), ("a-bin", b"\x01"), state])
    assert again is first
    span = trace.get_current_span(first).get_span_context()
    assert span.trace_id == 0x1AF7651916CD43DD8448EB211C80319C
    assert span.trace_state.get("vendor") == "pay9b"
    # Another tracestate is another context.
    other = tracing.incoming_context([("traceparent", _PARENT), ("tracestate", "vendor=x")])
    assert trace.get_current_span(other).get_span_context().trace_state.get("vendor") == "x"
