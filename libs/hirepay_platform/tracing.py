"""OpenTelemetry tracing: provider set-up, exporters (OTLP by the standard OTEL_* variables, a JSON
file for local runs and tests, the console), library instrumentation, and W3C trace context
carried in gRPC metadata."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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
# True once spans go to an OTLP collector: only then are SQL statements and outgoing HTTP calls
# traced (the JSON file of local runs and tests keeps the RPC-level spans its readers expect).
_instrument_libraries = False


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
    """Install the tracer provider once per process.

    `exporter` (HIREPAY_TRACES, else OTEL_TRACES_EXPORTER): a comma-separated list of `none`,
    `otlp` (OTLP/gRPC; endpoint, headers, TLS and batching from the standard
    OTEL_EXPORTER_OTLP_* and OTEL_BSP_* variables), `console`, `file:/path/spans.jsonl`.
    OTEL_SERVICE_NAME (and OTEL_RESOURCE_ATTRIBUTES) name the process when set."""
    global _configured, _instrument_libraries
    if _configured:
        return
    name = os.environ.get("OTEL_SERVICE_NAME") or service
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    for item in (part.strip() for part in exporter.split(",")):
        if item == "otlp":
            # Imported here: a process that does not export pays nothing for the gRPC exporter.
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            _instrument_libraries = True
        elif item == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif item.startswith("file:"):
            # Simple (synchronous) so spans are on disk when a test reads them.
            provider.add_span_processor(SimpleSpanProcessor(JsonFileSpanExporter(item[5:])))
    trace.set_tracer_provider(provider)
    if _instrument_libraries:
        # Outgoing HTTP (provider calls, signed callbacks) gets CLIENT spans with W3C context.
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor().instrument()
    _configured = True


def instrument_engine(engine: Any) -> None:
    """Spans for every SQL statement of `engine` (an AsyncEngine), when spans go over OTLP."""
    if not _instrument_libraries:
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    # No SQL commenter: statement text stays exactly what the code wrote (and parameters, which
    # may carry customer data, are never recorded by the instrumentation).
    SQLAlchemyInstrumentor().instrument(
        engine=engine.sync_engine,
        enable_commenter=False,
        # The package declares sqlalchemy < 2.1; the engine events it hooks are unchanged in 2.1
        # (tests/platform/test_otlp_export.py checks the SQL spans arrive).
        skip_dep_check=True,
    )


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
