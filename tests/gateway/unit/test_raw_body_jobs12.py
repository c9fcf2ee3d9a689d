"""A webhook's raw body is the input guard's kept copy when it kept one (issue 13): the same
bytes, without reading the request's stream again; a body the guard did not keep (not JSON) is
read from the stream as before, and the limit holds either way."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request

from gateway.api.errors import ApiError
from gateway.entrypoints.deps import read_raw_body
from gateway.entrypoints.input_guard import InputGuardMiddleware

# JSON as a provider sends it: spacing and escapes the signature covers, byte for byte.
_EVENT = b'{"id": "evt_1",  "data": {"note": "caf\xc3\xa9 \\u00e9"}}\n'


def _read(body: bytes, *, limit: int = 1 << 20, guard_limit: int = 1 << 20) -> tuple[Any, int]:
    """read_raw_body(request, limit) behind the input guard, and how many times the route's
    receive was called for it (the server's receive, wrapped by the guard's replay)."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    seen: dict[str, Any] = {"reads": 0}

    async def server_receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def route(scope: Any, receive: Any, send: Any) -> None:
        async def counted() -> Any:
            seen["reads"] += 1
            return await receive()

        try:
            seen["body"] = await read_raw_body(Request(scope, counted), limit)
        except ApiError as exc:
            seen["body"] = exc.status

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/payments/webhook/stripe",
        "query_string": b"",
        "headers": [(b"content-length", str(len(body)).encode())],
    }
    asyncio.run(InputGuardMiddleware(route, guard_limit)(scope, server_receive, None))
    return seen["body"], seen["reads"]


def test_a_json_body_the_guard_kept_is_taken_as_it_is() -> None:
    assert _read(_EVENT) == (_EVENT, 0)


@pytest.mark.parametrize("body", [b"not json at all", b'{"cut": '])
def test_a_body_the_guard_did_not_keep_is_read_from_the_stream(body: bytes) -> None:
    got, reads = _read(body)
    assert got == body and reads >= 1


def test_the_limit_holds_for_a_kept_body_too() -> None:
    # A route's limit below the guard's: the kept copy is not taken past it (refused as before).
    assert _read(_EVENT, limit=10)[0] == 413
