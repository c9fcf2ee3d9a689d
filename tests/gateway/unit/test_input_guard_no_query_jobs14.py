"""The input guard's check of a request line with no query string (every posting and webhook
delivery) parses nothing (issue 13): parse_qsl's own argument checks were ~7 Python calls per
request. A query string is still parsed and refused as before (PAY-11)."""

from __future__ import annotations

import pstats
from typing import Any

import pytest

from gateway.entrypoints.input_guard import _check_request_line, _Refused
from tests.support.python_calls import profiled


def _scope(query: bytes, path: str = "/api/jobs/create-with-payment") -> dict[str, Any]:
    return {
        "type": "http",
        "path": path,
        "query_string": query,
        "headers": [(b"host", b"x"), (b"content-type", b"application/json")],
    }


def test_a_request_line_without_a_query_string_is_checked_in_a_few_calls() -> None:
    scope = _scope(b"")
    with profiled() as profile:
        _check_request_line(scope)
    calls = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
    # The path's text check and the scope look-ups; parse_qsl was about 7 more.
    assert calls <= 7, calls


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (b"category=%00", "category"),
        (b"x%00=1", "query"),
        (b"page_token=abc%00&page_size=2", "page_token"),
    ],
)
def test_a_query_string_is_still_parsed_and_refused(query: bytes, field: str) -> None:
    with pytest.raises(_Refused) as refused:
        _check_request_line(_scope(query))
    body = refused.value.error.body()
    assert body["error"] == "VALIDATION_FAILED"
    assert field in body["fields"]


@pytest.mark.parametrize("query", [b"page_size=2", b"a=&b", b"=", b"&&"])
def test_a_clean_query_string_passes(query: bytes) -> None:
    _check_request_line(_scope(query))


def test_a_nul_in_a_header_is_refused_without_a_query_string() -> None:
    scope = _scope(b"")
    scope["headers"].append((b"x-a", b"1\x00"))
    with pytest.raises(_Refused):
        _check_request_line(scope)
