"""Latency budget of a posting by hop, from the spans every process writes (HIREPAY_TRACES=file:).

Each span's own time is its duration less its children's (a child may run in another process: the
W3C context crosses gRPC), summed per hop over a trace, then the median over the traces. The
spans are the OpenTelemetry instrumentations' (and our db.commit and provider spans):
- a service's SERVER span and its own internal spans: the service ("jobs");
- its database COMMITs ("db.commit"): "<service> commit";
- its SQL statements (SQLAlchemy's CLIENT spans, `db.system` or `db.system.name` set; the traced
  stack turns them on with HIREPAY_TRACE_SQL): "<service> sql", each a round trip to PostgreSQL
  and its execution;
- payments' provider calls ("provider.<operation>", one per call whatever the SDK): "provider", the
  SDK's own work in payments (its HTTP round trip, when made with httpx, is the next hop);
- a gRPC CLIENT span less the callee's SERVER span: the wire and queueing between them,
  "<caller>-><callee> wire";
- an outgoing HTTP CLIENT span (httpx: Stripe and Fatora calls, signed callbacks): "<service> http
  out", the provider's own time included (the SDKs over `requests`, PayPal and Razorpay, have no
  HTTP spans: their round trips stay in "provider").
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def read_spans(path: Path) -> list[dict[str, Any]]:
    """The finished spans in a JSON-lines file (spans without timestamps are skipped)."""
    spans = []
    if not path.exists():
        return spans
    for line in path.read_text().splitlines():
        if line.strip():
            span = json.loads(line)
            if span.get("start_ns") and span.get("end_ns"):
                spans.append(span)
    return spans


def hop_of(span: dict[str, Any]) -> str:
    """The hop a span's own time is counted in (see the module's docstring)."""
    service = str(span["service"])
    if span["name"] == "db.commit":
        return f"{service} commit"
    if span["name"].startswith("provider."):
        return "provider"
    if span.get("kind") == "CLIENT":
        attributes = span.get("attributes", {})
        if attributes.get("db.system") or attributes.get("db.system.name"):
            return f"{service} sql"
        rpc_service = str(attributes.get("rpc.service", ""))
        if rpc_service:  # hirepay.jobs.v1.JobsService -> jobs
            parts = rpc_service.split(".")
            return f"{service}->{parts[1] if len(parts) > 1 else rpc_service} wire"
        return f"{service} http out"
    return service


def own_time_by_hop(trace: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Milliseconds of own time (duration less children) per service, and "total" for the root."""
    spans = list(trace)
    children: dict[str, float] = defaultdict(float)
    for span in spans:
        if span["parent_span_id"]:
            children[span["parent_span_id"]] += span["end_ns"] - span["start_ns"]
    hops: dict[str, float] = defaultdict(float)
    ids = {span["span_id"] for span in spans}
    for span in spans:
        duration = span["end_ns"] - span["start_ns"]
        own = max(0.0, duration - children.get(span["span_id"], 0.0))
        hops[hop_of(span)] += own / 1e6
        if not span["parent_span_id"] or span["parent_span_id"] not in ids:
            hops["total"] = max(hops.get("total", 0.0), duration / 1e6)
    hops["calls"] = float(len(spans))
    return dict(hops)


def _matches(span: dict[str, Any], text: str) -> bool:
    return text in span["name"] or any(text in v for v in span.get("attributes", {}).values())


def budget(spans: list[dict[str, Any]], root_match: str) -> dict[str, float]:
    """Median own time per hop over the traces whose root span's name or an attribute (e.g. the
    HTTP route) contains `root_match`."""
    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        by_trace[span["trace_id"]].append(span)
    rows = []
    for trace in by_trace.values():
        ids = {s["span_id"] for s in trace}
        roots = [s for s in trace if not s["parent_span_id"] or s["parent_span_id"] not in ids]
        if any(_matches(root, root_match) for root in roots):
            rows.append(own_time_by_hop(trace))
    if not rows:
        return {}
    hops = sorted({hop for row in rows for hop in row})
    result = {hop: statistics.median(row.get(hop, 0.0) for row in rows) for hop in hops}
    result["traces"] = float(len(rows))
    return result


def budget_line(result: dict[str, float]) -> str:
    if not result:
        return "    latency budget: no traces found"
    hops = "  ".join(
        f"{hop} {ms:.1f}"
        for hop, ms in sorted(result.items())
        if hop not in ("total", "calls", "traces")
    )
    return (
        f"    latency budget by hop, median ms over {int(result['traces'])} postings (c=1, traced): "
        f"total {result.get('total', 0.0):.1f} = {hops}  "
        f"(spans per posting {result.get('calls', 0.0):.0f}; 'http out' includes the provider's "
        "time of calls made with httpx)"
    )
