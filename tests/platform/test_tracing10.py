"""A request that carries no trace context begins its trace without the propagator's extract,
and the gRPC calls made for it carry exactly what the propagator would inject (issue 13): the
same traceparent, nothing else; a propagator that injects more (or reads an empty carrier into
something) is used as before. Trace ids still join a posting's logs across services (OPS-2)."""

from __future__ import annotations

import asyncio
import cProfile
import pstats
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


def _injected(ctx: Any) -> tuple[tuple[str, str], ...]:
    carrier: dict[str, str] = {}
    propagate.get_global_textmap().inject(carrier, ctx)
    return tuple(carrier.items())


async def _request(headers: list[tuple[bytes, bytes]]) -> tuple[Any, tuple[tuple[str, str], ...]]:
    """The context an HTTP request runs in (TraceContextMiddleware) and what a gRPC call made
    in it sends (tracing.outgoing_context)."""
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((otel_context.get_current(), tracing.outgoing_context()))

    middleware = tracing.TraceContextMiddleware(app)
    await middleware({"type": "http", "path": "/api/jobs", "headers": headers}, None, None)
    return seen[0]


@pytest.fixture
def textmap() -> Iterator[None]:
    """The process's propagator, put back after the test."""
    before = propagate.get_global_textmap()
    yield
    propagate.set_global_textmap(before)


def test_a_request_without_context_begins_a_trace_and_calls_carry_what_inject_makes(
    textmap: None,
) -> None:
    propagate.set_global_textmap(
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    )
    traces = set()
    for _ in range(3):
        ctx, sent = asyncio.run(_request([(b"user-agent", b"bench")]))
        span = trace.get_current_span(ctx).get_span_context()
        assert span.is_valid and span.trace_flags.sampled and not span.is_remote
        assert sent == _injected(ctx)  # the propagator's own output, to the character
        assert [name for name, _ in sent] == ["traceparent"]
        traces.add(span.trace_id)
    assert len(traces) == 3  # each request its own trace


def test_a_request_without_context_costs_no_extract_and_no_inject(textmap: None) -> None:
    propagate.set_global_textmap(
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    )
    asyncio.run(_request([]))  # the propagator checked once

    async def measured() -> cProfile.Profile:
        with profiled() as profile:
            await _request([(b"accept", b"*/*")])
        return profile

    profile = asyncio.run(measured())
    called = {name for (_, _, name) in pstats.Stats(profile).stats}  # type: ignore[attr-defined]
    assert not called & {"extract", "inject"}, called


class _StampingPropagator(TraceContextTextMapPropagator):
    """Injects a field of its own beside the traceparent."""

    def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
        super().inject(carrier, context)
        carrier["x-stamp"] = "1"

    @property
    def fields(self) -> set[str]:
        return {*super().fields, "x-stamp"}


class _DefaultingPropagator(TraceContextTextMapPropagator):
    """Reads an empty carrier into a context of its own."""

    def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
        found = super().extract(carrier, context)
        return otel_context.set_value("x-default", "1", found)


@pytest.mark.parametrize("propagator", [_StampingPropagator, _DefaultingPropagator])
def test_another_propagator_is_used_as_before(textmap: None, propagator: type) -> None:
    propagate.set_global_textmap(propagator())
    ctx, sent = asyncio.run(_request([]))
    assert trace.get_current_span(ctx).get_span_context().is_valid
    assert sent == _injected(ctx)
    if propagator is _StampingPropagator:
        assert dict(sent)["x-stamp"] == "1"
    else:
        assert ctx.get("x-default") == "1"


def test_a_request_with_context_continues_it(textmap: None) -> None:
    parent = "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    ctx, sent = asyncio.run(_request([(b"traceparent", parent.encode())]))
    assert trace.get_current_span(ctx).get_span_context().trace_id == int(parent[3:35], 16)
    assert sent == _injected(ctx) and dict(sent)["traceparent"] == parent
