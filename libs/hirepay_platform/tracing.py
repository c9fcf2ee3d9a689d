"""OpenTelemetry tracing: provider set-up, exporters (OTLP by the standard OTEL_* variables, a JSON
file for local runs and tests, the console), and the OpenTelemetry instrumentations that make the
spans and carry the W3C context: gRPC (aio server and client interceptors: one SERVER span per
RPC, one CLIENT span per call), FastAPI at the edge, httpx for outgoing HTTP, and SQLAlchemy
statements when enabled (HIREPAY_TRACE_SQL; off by default: see the README's tracing notes).
A process that exports no spans makes no gRPC spans, nor (at the edge) HTTP ones: it only carries
the W3C context on its hops, with OpenTelemetry's propagator (`exporting`). What is formatted or
parsed here by hand (a new trace's traceparent, a canonical incoming one) is checked once per
propagator against the propagator's own output (`_plain`, `_parses_traceparent`)."""

from __future__ import annotations

import contextvars
import json
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

_configured = False
# True once spans go anywhere: only then are outgoing HTTP calls (and, when enabled, SQL
# statements) instrumented; a process that exports nothing pays nothing for them.
_exporting = False
# The engines whose statements get spans (instrument_engine), for instrumenting them all at once.
_SQL_ENGINES: list[Any] = []
# True when outgoing HTTP calls get CLIENT spans (spans exported and HIREPAY_TRACE_HTTP on): the
# httpx instrumentation's, and those of transports it does not see (payments' http_pool).
_http_spans = False
# Environment switches of the library instrumentations (read at set-up).
TRACE_SQL_ENV = "HIREPAY_TRACE_SQL"
TRACE_HTTP_ENV = "HIREPAY_TRACE_HTTP"
_OFF = ("", "0", "false", "no", "off")


def _runtime_context_var() -> contextvars.ContextVar[Context] | None:
    """The ContextVar OpenTelemetry keeps the current context in, when its runtime context is
    the default one (ContextVarsRuntimeContext, chosen once, when opentelemetry.context is
    imported); None for any other runtime context."""
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    if type(runtime) is not ContextVarsRuntimeContext:
        return None
    var = getattr(runtime, "_current_context", None)
    return var if isinstance(var, contextvars.ContextVar) else None


# The current trace context read, made current and restored (OpenTelemetry's get_current, attach
# and detach) through the ContextVar's own methods when OpenTelemetry's runtime context is its
# default one: what `otel_context.get_current()` / `attach` / `detach` do, without their two
# Python calls each (the runtime context's method under the module's function). Every RPC a
# service serves attaches and detaches its caller's context and every call it makes reads the
# current one: 4 Python calls per served RPC and 2 per client call fewer (issue 13). With any
# other runtime context, OpenTelemetry's functions themselves. Unlike `detach`, a reset that
# fails (a token of another context) raises: each caller resets in the coroutine that set it.
_CONTEXT_VAR = _runtime_context_var()
if _CONTEXT_VAR is not None:
    current_context: Callable[[], Context] = _CONTEXT_VAR.get
    attach_context: Callable[[Context], object] = _CONTEXT_VAR.set
    detach_context: Callable[[Any], None] = _CONTEXT_VAR.reset
else:  # pragma: no cover (OpenTelemetry's default runtime context is the one installed)
    current_context = otel_context.get_current
    attach_context = otel_context.attach
    detach_context = otel_context.detach


def _switch(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in _OFF


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
    OTEL_SERVICE_NAME (and OTEL_RESOURCE_ATTRIBUTES) name the process when set.
    When spans are exported, outgoing HTTP calls get CLIENT spans (HIREPAY_TRACE_HTTP, on by
    default) and SQL statements get spans when HIREPAY_TRACE_SQL is on (off by default)."""
    global _configured, _exporting, _http_spans
    if _configured:
        return
    name = os.environ.get("OTEL_SERVICE_NAME") or service
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    for item in (part.strip() for part in exporter.split(",")):
        if item == "otlp":
            # Imported here: a process that does not export pays nothing for the gRPC exporter.
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            _exporting = True
        elif item == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
            _exporting = True
        elif item.startswith("file:"):
            # Simple (synchronous) so spans are on disk when a test reads them.
            provider.add_span_processor(SimpleSpanProcessor(JsonFileSpanExporter(item[5:])))
            _exporting = True
    trace.set_tracer_provider(provider)
    if _exporting and _switch(TRACE_HTTP_ENV, default=True):
        # Outgoing HTTP (provider calls, signed callbacks) gets CLIENT spans with W3C context.
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor().instrument()
        _http_spans = True
    _configured = True


def instrument_engine(engine: Any) -> None:
    """Spans for every SQL statement of `engine` (an AsyncEngine), when spans are exported and
    HIREPAY_TRACE_SQL is on: a span per statement costs CPU on every query (measured in the
    README), so it is a switch, not the default."""
    if not (_exporting and _switch(TRACE_SQL_ENV, default=False)):
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    instrumentor = SQLAlchemyInstrumentor()
    # The instrumentor is one per process and ignores a second instrument() (it only logs that
    # it is instrumented already): a process with two engines (jobs' and payments' posting path
    # on an engine of its own) had the second one's statements untraced. So every engine of the
    # process is instrumented again in one call, after the earlier ones' listeners are removed.
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    _SQL_ENGINES.append(engine.sync_engine)
    # No SQL commenter: statement text stays exactly what the code wrote (and parameters, which
    # may carry customer data, are never recorded by the instrumentation).
    instrumentor.instrument(
        engines=list(_SQL_ENGINES),
        enable_commenter=False,
        # The package declares sqlalchemy < 2.1; the engine events it hooks are unchanged in 2.1
        # (tests/platform/test_otlp_export.py checks the SQL spans arrive).
        skip_dep_check=True,
    )


def tracer(name: str) -> trace.Tracer:
    """A tracer for instrumentation scope `name`."""
    return trace.get_tracer(name)


# Probes and tooling are not traced: a span per health check would drown the real calls.
_UNTRACED_SERVICES = ("grpc.health.v1.Health", "grpc.reflection")


def traced_rpc(details: Any) -> bool:
    """The interceptors' filter: False for health checks and reflection. The same decision as
    OpenTelemetry's `negate(any_of(health_check(), service_prefix("grpc.reflection")))`, without
    its per-call isinstance checks against typing protocols and path normalisation (measured at
    about half of the client interceptor's cost at the gateway, issue 13). `method` is the full
    name, `/package.Service/Method` (bytes on aio client calls, str on the server)."""
    method = details.method
    if isinstance(method, bytes):
        method = method.decode()
    return not method.lstrip("/").startswith(_UNTRACED_SERVICES)


_TRACED_RPCS = traced_rpc


def server_interceptor() -> grpc.aio.ServerInterceptor:
    """The OpenTelemetry aio server interceptor: the one SERVER span of every RPC (named by its
    full method, e.g. /hirepay.wallet.v1.WalletService/OpenAccount), continuing the caller's W3C
    context from the metadata. It goes first, so every other interceptor runs inside the span."""
    return aio_server_interceptor(filter_=_TRACED_RPCS)


def client_interceptors() -> Sequence[grpc.aio.ClientInterceptor]:
    """The OpenTelemetry aio client interceptor of unary calls: a CLIENT span per call, the W3C
    context injected into its metadata. Streams are left alone: the one stream a service opens
    (the settlement events) is long-lived and read with `read()`, which a wrapped stream lacks."""
    return [
        i
        for i in aio_client_interceptors(filter_=_TRACED_RPCS)
        if isinstance(i, grpc.aio.UnaryUnaryClientInterceptor)
    ]


# The edge's probes and metrics are not traced (no span, no trace context: see instrument_fastapi).
UNTRACED_PATHS = ("/healthz", "/readyz", "/metrics")


def instrument_fastapi(app: Any) -> None:
    """The trace of every HTTP request at the edge. When spans are exported: the OpenTelemetry
    FastAPI instrumentation, the SERVER span of every request (named `<METHOD> <route
    template>`), continuing the caller's W3C context; probes and metrics are not traced, and no
    span is made per ASGI send or receive. When nothing is exported: only the W3C context
    (TraceContextMiddleware), as the gRPC services do: a span nobody sees cost the gateway a
    fifth of its CPU per posting (route matching for its name, attributes, the span; issue 13)."""
    if not exporting():
        app.add_middleware(TraceContextMiddleware)
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, excluded_urls=",".join(UNTRACED_PATHS), exclude_spans=["receive", "send"]
    )


# Where TraceContextMiddleware leaves the trace a request runs in, its id as 32 lower-case hex
# digits (bytes): what the current span would say inside it, known without asking it (about 10
# Python calls per request; issue 13). Set only here: inside the OpenTelemetry instrumentation's
# span (when spans are exported) a request has none, and the current span says.
TRACE_ID_KEY = "hirepay.trace_id"

# The request headers that carry W3C context (trace context and baggage), as ASGI names them.
_CONTEXT_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})


class TraceContextMiddleware:
    """A pure ASGI middleware for a process that exports no spans: each HTTP request runs in its
    caller's trace context (the `traceparent` it sent), or begins a new trace, as the SERVER span
    would; the gRPC calls made for it then carry that context on (ServiceClient.call) and its
    logs and `x-trace-id` name that trace. Probes and metrics (UNTRACED_PATHS) get none, as they
    get no span."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path", "") in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _CONTEXT_HEADERS
        }
        textmap = propagate.get_global_textmap()
        if not carrier and _plain(textmap):
            # A request from outside (_continued's new trace at once): its trace id is its root's,
            # made here and handed on (not read back from the root: issue 13).
            trace_id = _ids.generate_trace_id()
            ctx = _new_trace(Context(), textmap, trace_id)
        else:
            ctx = _continued(carrier)
            trace_id = trace.get_current_span(ctx).get_span_context().trace_id
        scope[TRACE_ID_KEY] = b"%032x" % trace_id
        token = attach_context(ctx)
        try:
            await self.app(scope, receive, send)
        finally:
            detach_context(token)


def http_spans() -> bool:
    """Whether outgoing HTTP calls get CLIENT spans (see setup_tracing): a transport that the
    httpx instrumentation does not wrap makes its own when this is true."""
    return _http_spans


def exporting() -> bool:
    """Whether this process exports spans (setup_tracing was given an exporter). Only then are
    the gRPC hops' spans made: server.py and client.py install the OpenTelemetry interceptors
    when this is true, and otherwise only carry the W3C context (`outgoing_context`,
    `incoming_context`), so that trace ids in the logs still join across services. Spans that
    go nowhere cost a tenth of a posting's CPU in the interceptors (issue 13)."""
    return _exporting


# What the last contexts calls were made in were injected as, by the context's id (the context
# and the propagator kept to check it is still the same one): a handler's calls are made in the
# one context its call continued (no spans here), an immutable Context the propagator would turn
# into the same metadata again (about 2 us per call, issue 13). Bounded: emptied when full.
_INJECTED_MAX = 1024
_injected: dict[int, tuple[Context, object, tuple[tuple[str, str], ...]]] = {}


def outgoing_context(ctx: Any = None, textmap: Any = None) -> tuple[tuple[str, str], ...]:
    """The current trace context as gRPC metadata (OpenTelemetry's configured propagator, the
    same `traceparent`/`tracestate` the client interceptor injects), for a process that makes
    no CLIENT spans; empty outside any trace. `ctx` and `textmap`: the current context and
    the configured propagator, when the caller has just looked them up (ServiceClient: two
    Python calls per call fewer, issue 13)."""
    if ctx is None:
        ctx = current_context()
    if textmap is None:
        textmap = propagate.get_global_textmap()
    found = _injected.get(id(ctx))
    if found is not None and found[0] is ctx and found[1] is textmap:
        return found[2]
    carrier: dict[str, str] = {}
    textmap.inject(carrier, ctx)
    metadata = tuple(carrier.items())
    if len(_injected) >= _INJECTED_MAX:
        _injected.clear()
    _injected[id(ctx)] = (ctx, textmap, metadata)
    return metadata


_ids = RandomIdGenerator()

# The contexts incoming calls continued, by the propagator and the values of its fields (e.g.
# traceparent, tracestate, baggage: what a propagator reads) the call carried. A process that
# makes no spans passes its caller's context on unchanged, so the calls of one trace reaching a
# service (jobs calls payments twice per posting) carry the same values, and extracting them
# again would parse them into an equal, immutable Context: about 5 us of regular expressions
# and objects per call (issue 13). Only a context that continues the caller's trace is kept,
# never a new trace begun for a call that carried none (or an invalid one): each such call
# begins its own. Bounded: emptied when full.
_CONTINUED_MAX = 1024
_continued_by_fields: dict[tuple[object, tuple[tuple[str, str], ...]], Context] = {}
# The fields each propagator reads (its `fields`), computed once.
_fields_of: dict[object, frozenset[str]] = {}


def _fields(textmap: Any) -> frozenset[str]:
    """The fields `textmap` reads (its `fields`), kept for the next calls."""
    fields = _fields_of[textmap] = frozenset(textmap.fields)
    return fields


def incoming_context(metadata: Sequence[tuple[str, str | bytes]]) -> Context:
    """The caller's trace context from an RPC's metadata, for a process that makes no SERVER
    spans: the handler then runs (and logs) in the caller's trace. A call that carries none
    begins a new trace, as the server interceptor's root span would (sampled, as by the default
    sampler)."""
    textmap = propagate.get_global_textmap()
    fields = _fields_of.get(textmap) or _fields(textmap)
    # The propagator's fields the call carried, in name order (the key of the context they
    # continue): picked from the metadata in one pass, with no call per entry (`type(...) is`,
    # not isinstance: about 4 Python calls per RPC fewer; issue 13). gRPC gives text values as
    # str and binary (-bin) ones as bytes, never a text propagator's. (A loop, not a list
    # comprehension: no Python call of its own.)
    picked: list[tuple[str, str]] = []
    for k, v in metadata:
        if k in fields and type(v) is str:
            picked.append((k, v))
    picked.sort()
    carried = tuple(picked)
    if not carried:
        return _continued({k: v for k, v in metadata if type(v) is str})
    key = (textmap, carried)
    ctx = _continued_by_fields.get(key)
    if ctx is not None:
        return ctx
    ctx = _canonical_parent(textmap, carried)
    if ctx is None:
        # The whole text metadata, as before (a propagator may read more than its fields), by
        # the propagator got above (propagate.extract would get it again).
        ctx = textmap.extract({k: v for k, v in metadata if type(v) is str})
        if not trace.get_current_span(ctx).get_span_context().is_valid:
            return _new_trace(ctx)
    if len(_continued_by_fields) >= _CONTINUED_MAX:
        _continued_by_fields.clear()
    _continued_by_fields[key] = ctx
    if _echoed(textmap, carried, ctx):
        # What the calls made in it will carry is what it came with: remembered as injected
        # (issue 13: the propagator's inject, about 20 Python calls, once per continued call).
        if len(_injected) >= _INJECTED_MAX:
            _injected.clear()
        _injected[id(ctx)] = (ctx, textmap, carried)
    return ctx


def _echoed(textmap: Any, carried: tuple[tuple[str, str], ...], ctx: Context) -> bool:
    """Whether `textmap` would inject `ctx`, the valid context it just extracted from `carried`,
    as `carried` itself: a carrier of one sampled traceparent written as the propagator writes
    one (version 00, lowercase: 55 characters, nothing around it), nothing but its span in the
    context (no baggage; no tracestate was carried), and a propagator that echoes such a
    traceparent alone (_echoes). No Python function is called for the checks."""
    if len(carried) != 1 or len(ctx) != 1:
        return False
    name, sent = carried[0]
    return (
        name == "traceparent"
        and len(sent) == 55
        and sent.startswith("00-")
        and sent.endswith("-01")
        and sent == sent.lower()
        and (_echoing_propagators.get(textmap) or _echoes(textmap))
    )


# By propagator: whether it injects a context it extracted from a sampled traceparent alone as
# that traceparent alone (_plain's check, for a continued context). Checked once per propagator,
# on its own output.
_echoing_propagators: dict[object, bool] = {}


def _echoes(textmap: Any) -> bool:
    echoes = _echoing_propagators.get(textmap)
    if echoes is None:
        echoes = _plain(textmap)
        for _ in range(2):
            root = _root()
            sent = _traceparent(root.trace_id, root.span_id)
            carrier: dict[str, str] = {}
            textmap.inject(carrier, textmap.extract(dict(sent)))
            echoes = echoes and tuple(carrier.items()) == sent
        _echoing_propagators[textmap] = echoes
    return echoes


# A W3C traceparent as this system's processes send it (version 00, lower-case hex, nothing
# around it or after the flags): the ids and flags. Anything else goes to the propagator.
_CANONICAL_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_NO_TRACE_ID = "0" * 32
_NO_SPAN_ID = "0" * 16
# The fields of the propagators whose extract _parses_traceparent may check: W3C trace context
# and baggage (OpenTelemetry's default), which read nothing else from a carrier.
_W3C_FIELDS = frozenset({"traceparent", "tracestate", "baggage"})


def _canonical_parent(textmap: Any, carried: tuple[tuple[str, str], ...]) -> Context | None:
    """The context a call carrying a canonical traceparent and no other field of the propagator
    continues, made as W3C trace context's extract makes it, when the propagator is one whose
    extract does exactly that (`_parses_traceparent`); else None (the propagator extracts).
    Each posting reaches payments in three new traces' calls (the saga's Authorize, two webhook
    relays): the propagator's extract cost about 30 Python calls each (issue 13)."""
    if len(carried) != 1 or carried[0][0] != "traceparent":
        return None
    found = _CANONICAL_TRACEPARENT.fullmatch(carried[0][1])
    # (The propagator's verdict looked up here: a Python call fewer per new trace once known.)
    if found is None or not (_traceparent_propagators.get(textmap) or _parses_traceparent(textmap)):
        return None
    trace_id, span_id, flags = found.groups()
    if trace_id == _NO_TRACE_ID or span_id == _NO_SPAN_ID:
        return None  # (invalid: the propagator's way, a new trace)
    return _remote_parent(int(trace_id, 16), int(span_id, 16), int(flags, 16))


def _remote_parent(trace_id: int, span_id: int, flags: int) -> Context:
    """What W3C trace context's extract makes of a valid traceparent with no tracestate."""
    parent = SpanContext(
        trace_id=trace_id,
        span_id=span_id,
        is_remote=True,
        trace_flags=TraceFlags(flags),
        trace_state=None,
    )
    return trace.set_span_in_context(NonRecordingSpan(parent), Context())


# By propagator: whether its extract of a canonical traceparent alone is _remote_parent's
# context (W3C trace context, with or without baggage). Checked once per propagator.
_traceparent_propagators: dict[object, bool] = {}


def _parses_traceparent(textmap: Any) -> bool:
    parses = _traceparent_propagators.get(textmap)
    if parses is None:
        parses = frozenset(textmap.fields) <= _W3C_FIELDS and _plain(textmap)
        for flags in (0, 1):
            if not parses:
                break
            root = _root()
            header = f"00-{root.trace_id:032x}-{root.span_id:016x}-{flags:02x}"
            theirs = textmap.extract({"traceparent": header})
            ours = _remote_parent(root.trace_id, root.span_id, flags)
            parses = theirs.keys() == ours.keys() and all(
                _same(theirs[key], ours[key]) for key in ours
            )
        _traceparent_propagators[textmap] = parses
    return parses


def _same(theirs: object, ours: object) -> bool:
    """Equal context values; spans (compared by identity) by their span contexts."""
    if isinstance(theirs, NonRecordingSpan) and isinstance(ours, NonRecordingSpan):
        return theirs.get_span_context() == ours.get_span_context()
    return theirs == ours


def _continued(carrier: dict[str, str]) -> Context:
    """The context a carrier (gRPC metadata, HTTP headers) continues, else a new sampled trace."""
    textmap = propagate.get_global_textmap()
    if not carrier and _plain(textmap):
        # Nothing to extract (a request from outside, a probe's call): the new trace at once,
        # its outgoing metadata known (issue 13: about 40 Python calls per such request).
        return _new_trace(Context(), textmap)
    ctx = textmap.extract(carrier)  # (what propagate.extract does, the propagator got above)
    if trace.get_current_span(ctx).get_span_context().is_valid:
        return ctx
    return _new_trace(ctx)


_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def _root() -> SpanContext:
    return SpanContext(
        trace_id=_ids.generate_trace_id(),
        span_id=_ids.generate_span_id(),
        is_remote=False,
        trace_flags=_SAMPLED,
    )


def _traceparent(trace_id: int, span_id: int) -> tuple[tuple[str, str], ...]:
    """A new trace's root (its ids) as W3C trace context metadata (its traceparent; no
    tracestate)."""
    return (("traceparent", f"00-{trace_id:032x}-{span_id:016x}-01"),)


# By propagator: whether it finds nothing in an empty carrier (an empty context, as W3C trace
# context and baggage give) and injects a new trace's root context with no baggage as its
# traceparent alone (_traceparent). Checked once per propagator, on its own output.
_plain_propagators: dict[object, bool] = {}


def _plain(textmap: Any) -> bool:
    plain = _plain_propagators.get(textmap)
    if plain is None:
        plain = textmap.extract({}) == Context()
        for _ in range(2):
            root = _root()
            carrier: dict[str, str] = {}
            textmap.inject(carrier, trace.set_span_in_context(NonRecordingSpan(root), Context()))
            plain = plain and tuple(carrier.items()) == _traceparent(root.trace_id, root.span_id)
        _plain_propagators[textmap] = plain
    return plain


def _new_trace(ctx: Context, plain: object = None, trace_id: int | None = None) -> Context:
    """`ctx` in a new sampled trace (for a call or request that continues none) with the id
    `trace_id` (a new one when None), rooted at a new span id, as _root() roots one. `plain`: the
    propagator, a plain one (_plain), and `ctx` empty: what outgoing_context would inject in the
    new context is known, and remembered as if injected."""
    if trace_id is None:
        trace_id = _ids.generate_trace_id()
    span_id = _ids.generate_span_id()
    # (The ids as made, not read back through the root's properties: three Python calls per
    # request at the edge; issue 13.)
    root = SpanContext(trace_id=trace_id, span_id=span_id, is_remote=False, trace_flags=_SAMPLED)
    new = trace.set_span_in_context(NonRecordingSpan(root), ctx)
    if plain is not None:
        if len(_injected) >= _INJECTED_MAX:
            _injected.clear()
        _injected[id(new)] = (new, plain, _traceparent(trace_id, span_id))
    return new
