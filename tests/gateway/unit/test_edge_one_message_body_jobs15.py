"""Two per-request costs of the gateway's edge cut (issue 13), the answers unchanged:

- the input guard takes a body sent in one message (every posting and webhook delivery) as it
  is, not put in a list and joined; a body in several messages is still joined, and either is
  refused over the limit (413, PAY-11);
- the edge middleware makes its access log's arguments only when the access log is written (the
  gateway logs at WARNING under load): at INFO the line is the same;
- the trace id header is written as bytes at once: the same 32 hex digits."""

from __future__ import annotations

import logging
import pstats
from typing import Any

import pytest

from gateway.entrypoints.input_guard import InputGuardMiddleware, _Refused
from gateway.entrypoints.observability import EdgeMiddleware
from tests.support.python_calls import profiled

BODY = b'{"job": {"title": "A job"}, "accept_terms": true}'


def _scope(length: int | None) -> dict[str, Any]:
    headers = [(b"host", b"x"), (b"content-type", b"application/json")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http", "method": "POST", "path": "/api/x", "headers": headers}


def _receiver(*messages: dict[str, Any]) -> Any:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    return receive


def _profiled(coro: Any) -> tuple[pstats.Stats, Any]:
    """The profile of running `coro` to its end (it never suspends), and its result."""
    with profiled() as profile:
        try:
            coro.send(None)
        except StopIteration as done:
            result = done.value
    return pstats.Stats(profile), result


def _calls(coro: Any) -> tuple[int, Any]:
    """Python and built-in calls made while running `coro` to its end, and its result."""
    stats, result = _profiled(coro)
    return stats.total_calls, result  # type: ignore[attr-defined]


def _called(stats: pstats.Stats) -> set[str]:
    """The names of the functions called (built-ins as `<built-in method builtins.round>`)."""
    return {name for (_, _, name) in stats.stats}  # type: ignore[attr-defined]


def test_a_body_in_one_message_is_taken_as_it_is_in_a_few_calls() -> None:
    guard = InputGuardMiddleware(app=None, max_body_bytes=1000)  # type: ignore[arg-type]
    receive = _receiver({"type": "http.request", "body": BODY, "more_body": False})
    calls, body = _calls(guard._read_body(_scope(len(BODY)), receive))
    assert body is BODY
    # (measured: 12 with a list joined; 10 taken as it is)
    assert calls <= 10, calls


async def test_a_body_in_several_messages_is_still_joined() -> None:
    guard = InputGuardMiddleware(app=None, max_body_bytes=1000)  # type: ignore[arg-type]
    receive = _receiver(
        {"type": "http.request", "body": BODY[:10], "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": BODY[10:]},
    )
    assert (
        await guard._read_body(
            _scope(None) | {"headers": [(b"transfer-encoding", b"chunked")]}, receive
        )
        == BODY
    )


@pytest.mark.parametrize("split", [False, True])
async def test_a_body_over_the_limit_is_refused_either_way(split: bool) -> None:
    guard = InputGuardMiddleware(app=None, max_body_bytes=len(BODY) - 1)  # type: ignore[arg-type]
    messages = (
        [
            {"type": "http.request", "body": BODY[:5], "more_body": True},
            {"type": "http.request", "body": BODY[5:], "more_body": False},
        ]
        if split
        else [{"type": "http.request", "body": BODY}]
    )
    # (no content-length: the limit is found while reading, as with chunked bodies)
    scope = _scope(None) | {"headers": [(b"transfer-encoding", b"chunked")]}
    with pytest.raises(_Refused) as refused:
        await guard._read_body(scope, _receiver(*messages))
    assert refused.value.error.status == 413


async def test_a_disconnect_before_the_body_is_an_empty_body() -> None:
    guard = InputGuardMiddleware(app=None, max_body_bytes=1000)  # type: ignore[arg-type]
    assert await guard._read_body(_scope(5), _receiver({"type": "http.disconnect"})) == b""


async def _answered(
    level: int, caplog: pytest.LogCaptureFixture, sent: list[Any] | None = None
) -> tuple[set[str], list[str]]:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def send(message: Any) -> None:
        if sent is not None:
            sent.append(message)

    edge = EdgeMiddleware(app)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/jobs/create-with-payment",
        "headers": [],
    }
    caplog.clear()
    with caplog.at_level(level, logger="gateway.access"):
        await edge(scope, _receiver(), send)  # warms the level cache
        caplog.clear()
        stats, _ = _profiled(edge(scope, _receiver(), send))
    return _called(stats), [r.getMessage() for r in caplog.records]


async def test_the_access_log_costs_nothing_when_it_is_not_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    quiet, lines = await _answered(logging.WARNING, caplog)
    assert lines == []
    # (before: Logger.info and the duration's rounding were called for every request; 50 -> 48
    # Python calls per answer in this test)
    assert "info" not in quiet
    assert "<built-in method builtins.round>" not in quiet
    written, lines = await _answered(logging.INFO, caplog)
    assert lines == ["POST unmatched 201"]
    assert caplog.records[0].fields["duration_ms"] >= 0  # type: ignore[attr-defined]
    assert "info" in written


async def test_the_trace_id_header_is_the_current_traces_in_hex_without_format(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from opentelemetry import context, trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    span = NonRecordingSpan(
        SpanContext(0x00AB << 64 | 0x1, 0x2, is_remote=True, trace_flags=TraceFlags(1))
    )
    token = context.attach(trace.set_span_in_context(span))
    try:
        sent: list[Any] = []
        called, _ = await _answered(logging.WARNING, caplog, sent)
    finally:
        context.detach(token)
    start = [m for m in sent if m["type"] == "http.response.start"][-1]  # the profiled one
    assert dict(start["headers"])[b"x-trace-id"] == b"00000000000000ab0000000000000001"
    assert (
        dict(start["headers"])[b"x-trace-id"]
        == format(span.get_span_context().trace_id, "032x").encode()
    )
    assert "<built-in method builtins.format>" not in called
