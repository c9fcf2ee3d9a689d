"""An RPC carrying a canonical W3C traceparent (what Hirepay's processes send) continues its trace
without the propagator's extract, in the context the extract would make (issue 13: three new
traces' calls reach payments per posting, ~30 Python calls each); any other traceparent, a
tracestate or baggage beside it, or a propagator that reads or makes something else goes through
the propagator as before (OPS-2: trace ids join a posting's logs across services)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from hirepay_platform import tracing
from tests.support.python_calls import names_called


@pytest.fixture
def textmap() -> Iterator[None]:
    """The process's propagator, put back after the test."""
    before = propagate.get_global_textmap()
    yield
    propagate.set_global_textmap(before)


def _w3c() -> CompositePropagator:
    """OpenTelemetry's default propagator (OTEL_PROPAGATORS unset), a new one per test."""
    return CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])


def _ids() -> tuple[str, str]:
    """A trace id and span id no other call of the test session carried (no remembered context)."""
    return secrets.token_hex(16), secrets.token_hex(8)


def _metadata(**fields: str) -> list[tuple[str, str | bytes]]:
    """gRPC invocation metadata as a service receives it: the trace fields among others."""
    return [
        ("x-hirepay-service-token", "token"),
        *fields.items(),
        ("user-agent", "grpc-python"),
        ("x-binary-bin", b"\x00\x01"),
    ]


def _span(ctx: Any) -> Any:
    return trace.get_current_span(ctx).get_span_context()


@pytest.mark.parametrize("flags", ["01", "00"])
@pytest.mark.parametrize("make", [_w3c, TraceContextTextMapPropagator])
def test_a_canonical_traceparent_is_continued_without_the_propagators_extract(
    textmap: None, make: Any, flags: str
) -> None:
    propagator = make()
    propagate.set_global_textmap(propagator)
    trace_id, span_id = _ids()
    tracing.incoming_context(_metadata(traceparent=f"00-{_ids()[0]}-{span_id}-01"))  # checked once
    header = f"00-{trace_id}-{span_id}-{flags}"
    found: list[Any] = []
    called = names_called(
        lambda: found.append(tracing.incoming_context(_metadata(traceparent=header)))
    )
    assert "extract" not in called, called
    ctx = found[0]
    theirs = propagator.extract({"traceparent": header})
    assert _span(ctx) == _span(theirs)  # trace and span id, flags, remote, no trace state
    assert _span(ctx).is_remote and _span(ctx).trace_id == int(trace_id, 16)
    assert _span(ctx).trace_flags.sampled is (flags == "01")
    assert ctx.keys() == theirs.keys()  # nothing else in the context (no baggage)
    # The calls the handler makes carry the same traceparent on.
    token = otel_context.attach(ctx)
    try:
        assert tracing.outgoing_context() == (("traceparent", header),)
    finally:
        otel_context.detach(token)


def _same_as_the_propagators(header: str, **more: str) -> None:
    """incoming_context ends where the propagator's extract does: its remote parent, or a new
    local sampled trace when the propagator finds none."""
    fields = {"traceparent": header, **more}
    ctx = tracing.incoming_context(_metadata(**fields))
    theirs = propagate.get_global_textmap().extract(fields)
    if _span(theirs).is_valid:
        assert _span(ctx) == _span(theirs)
        assert dict(baggage.get_all(ctx)) == dict(baggage.get_all(theirs))
    else:  # a new trace of its own
        assert _span(ctx).is_valid and not _span(ctx).is_remote


@pytest.mark.parametrize(
    "shape",
    [
        "00-{t}-{s}-01",
        "00-{T}-{S}-01",  # upper case: not W3C, the propagator refuses it
        "01-{t}-{s}-01",  # a later version
        "01-{t}-{s}-01-more",  # a later version's extra field
        "00-{t}-{s}-01-more",  # version 00 with an extra field: refused
        "ff-{t}-{s}-01",  # the invalid version
        "00-" + "0" * 32 + "-{s}-01",  # no trace id
        "00-{t}-" + "0" * 16 + "-01",  # no span id
        " 00-{t}-{s}-01",  # surrounding white space
        "00-{t}-{s}-01\t",
        "00-{t}-{s}-1",  # short flags
        "00-{t}-{s}-0z",
    ],
)
def test_every_other_traceparent_ends_where_the_propagator_ends(textmap: None, shape: str) -> None:
    propagate.set_global_textmap(_w3c())
    trace_id, span_id = _ids()
    header = shape.format(t=trace_id, s=span_id, T=trace_id.upper(), S=span_id.upper())
    _same_as_the_propagators(header)


def test_a_tracestate_or_baggage_beside_it_goes_through_the_propagator(textmap: None) -> None:
    propagate.set_global_textmap(_w3c())
    for more in ({"tracestate": "vendor=1"}, {"baggage": "tenant=acme"}):
        trace_id, span_id = _ids()
        header = f"00-{trace_id}-{span_id}-01"
        called = names_called(lambda: _same_as_the_propagators(header, **more))  # noqa: B023
        assert "extract" in called
    ctx = tracing.incoming_context(_metadata(traceparent=header, baggage="tenant=acme"))
    assert baggage.get_baggage("tenant", ctx) == "acme"


class _MarkingPropagator(TraceContextTextMapPropagator):
    """Extracts a traceparent into a context with a value of its own beside the span."""

    def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
        found = super().extract(carrier, context)
        if trace.get_current_span(found).get_span_context().is_valid:
            found = otel_context.set_value("x-mark", "1", found)
        return found


class _ReadingPropagator(TraceContextTextMapPropagator):
    """Reads a field of its own beside the traceparent."""

    @property
    def fields(self) -> set[str]:
        return {*super().fields, "x-tenant"}


@pytest.mark.parametrize("propagator", [_MarkingPropagator, _ReadingPropagator])
def test_another_propagator_extracts_as_before(textmap: None, propagator: type) -> None:
    propagate.set_global_textmap(propagator())
    trace_id, span_id = _ids()
    header = f"00-{trace_id}-{span_id}-01"
    found: list[Any] = []
    called = names_called(
        lambda: found.append(tracing.incoming_context(_metadata(traceparent=header)))
    )
    assert "extract" in called
    assert _span(found[0]).trace_id == int(trace_id, 16)
    if propagator is _MarkingPropagator:
        assert found[0].get("x-mark") == "1"
