"""Three cuts on the gateway's way from a request to its answer (issue 13), each the same in what
it gives: a new trace begun at the edge from ids made once (its X-Trace-Id, its traceparent),
job and payment statuses named by a table, and a text field with no visible-character minimum
not counted."""

from __future__ import annotations

import pstats
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from gateway.api import convert, models
from hirepay.jobs.v1 import jobs_service_pb2 as jobs_pb
from hirepay_platform import tracing
from tests.support.python_calls import profiled


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def test_a_new_trace_is_begun_from_ids_made_once() -> None:
    carried: list[tuple[str, bytes]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        (name, value), *rest = tracing.outgoing_context()
        assert name == "traceparent" and not rest
        carried.append((value, scope[tracing.TRACE_ID_KEY]))

    edge = tracing.TraceContextMiddleware(app)
    scope = {"type": "http", "method": "GET", "path": "/api/x", "headers": []}
    await edge(dict(scope), _no_body, None)  # (warm: the propagator checked once)
    with profiled() as profile:
        await edge(dict(scope), _no_body, None)
    entered = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    # The root's ids are not read back through SpanContext's properties, nor a _root() made.
    assert not [
        name
        for (file, _, name) in entered
        if (file.endswith("trace/span.py") and name in ("trace_id", "span_id")) or name == "_root"
    ]
    (_, first_id), (_, second_id) = carried
    for traceparent, trace_id in carried:
        version, trace, span, flags = traceparent.split("-")
        assert (version, flags, len(trace), len(span)) == ("00", "01", 32, 16)
        assert trace.encode() == trace_id  # X-Trace-Id names the trace the calls carry
        assert int(trace, 16) and int(span, 16)
    assert first_id != second_id  # a new trace each


def test_statuses_are_named_as_the_enums_name_them() -> None:
    for name, number in jobs_pb.Job.Status.items():
        expected = None if number == jobs_pb.Job.STATUS_UNSPECIFIED else name.lower()
        assert convert.job_status_to_http(number) == expected
    for name, number in jobs_pb.Job.PaymentStatus.items():
        expected = None if number == jobs_pb.Job.PAYMENT_STATUS_UNSPECIFIED else name.lower()
        assert convert._payment_status_to_http(number) == expected
    # A number the enum does not name is refused as the enum refuses it.
    for to_http in (convert.job_status_to_http, convert._payment_status_to_http):
        with pytest.raises(ValueError, match="no name defined"):
            to_http(999)
    job = jobs_pb.Job(status=jobs_pb.Job.ACTIVE, payment_status=jobs_pb.Job.COMPLETED)
    with profiled() as profile:
        out = convert.job_to_http(job)
    assert (out.status, out.payment_status) == ("active", "completed")
    entered = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    assert not [f for (f, _, name) in entered if f.endswith("enum_type_wrapper.py")]


class _Token(BaseModel):
    token: models.ProviderToken
    reason: models.Reason


@pytest.mark.parametrize("value", ["", " ", "\u200b", "pm_card_visa"])
def test_a_text_without_a_minimum_passes_uncounted(value: str) -> None:
    with profiled() as profile:
        got = _Token(token=value, reason=value)
    assert (got.token, got.reason) == (value, value)
    names = {name for (_, _, name) in pstats.Stats(profile).stats}  # type: ignore[attr-defined]
    assert "visible_length" not in names


@pytest.mark.parametrize(("value", "problem"), [("a\x00", "NUL"), ("\ud800", "unicode")])
def test_a_text_without_a_minimum_is_still_checked(value: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        _Token(token=value, reason="ok")
    with pytest.raises(ValidationError, match=problem):
        _Token(token="ok", reason=value)
