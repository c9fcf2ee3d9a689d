"""OpenTelemetry tracing: provider set-up and W3C trace context carried in gRPC metadata."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

_configured = False


class JsonFileSpanExporter(SpanExporter):
    """Appends finished spans as JSON lines to a file shared by every local process (dev and tests)."""

    def __init__(self, path: str) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            ctx = span.get_span_context()
            parent = span.parent
            lines.append(
                json.dumps(
                    {
                        "service": span.resource.attributes.get("service.name"),
                        "name": span.name,
                        "kind": span.kind.name,
                        "trace_id": format(ctx.trace_id, "032x"),
                        "span_id": format(ctx.span_id, "016x"),
                        "parent_span_id": format(parent.span_id, "016x") if parent else None,
                        "attributes": {k: str(v) for k, v in (span.attributes or {}).items()},
                        "status": span.status.status_code.name,
                        # Wall-clock nanoseconds: with them a trace tells where its time went.
                        "start_ns": span.start_time,
                        "end_ns": span.end_time,
                    }
                )
            )
        with self._lock, self._path.open("a") as fh:
            fh.write("\n".join(lines) + "\n")
        return SpanExportResult.SUCCESS


def setup_tracing(service: str, exporter: str = "none") -> None:
    """Install the tracer provider once per process. exporter: none | console | file:/path."""
    global _configured
    if _configured:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter.startswith("file:"):
        # Simple (synchronous) so spans are on disk when a test reads them.
        provider.add_span_processor(SimpleSpanProcessor(JsonFileSpanExporter(exporter[5:])))
    trace.set_tracer_provider(provider)
    _configured = True


def tracer(name: str) -> trace.Tracer:
    """A tracer for instrumentation scope `name`."""
    return trace.get_tracer(name)


def inject_metadata(metadata: Sequence[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """Metadata with the current trace context added (W3C traceparent/tracestate)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [*(metadata or ()), *carrier.items()]


def extract_context(
    metadata: Sequence[tuple[str, str | bytes]] | Mapping[str, str] | None,
) -> otel_context.Context:
    """The remote trace context carried by incoming metadata."""
    if metadata is None:
        return propagate.extract({})
    items = metadata.items() if isinstance(metadata, Mapping) else metadata
    carrier = {k: v for k, v in items if isinstance(v, str)}
    return propagate.extract(carrier)
