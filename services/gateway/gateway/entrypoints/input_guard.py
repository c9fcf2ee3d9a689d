"""The edge's one check of raw input, before any route runs: NUL or lone surrogates in the path,
the query, a header or any string of a JSON body, JSON nested too deeply, and bodies above the
size limit are refused as PAY-11 errors (400 VALIDATION_FAILED, 413 PAYLOAD_TOO_LARGE).

A pure ASGI middleware, so it covers every route (and every future one) the same way; models and
routes then only see text that PostgreSQL, protobuf and the logs can hold.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.errors import ApiError, validation_failed
from hirepay_platform.untrusted import UntrustedInputError, loads_json, text_problem

_TOO_LARGE = ApiError(413, "PAYLOAD_TOO_LARGE", "The request body is too large")

# Where the guard leaves (body, parsed JSON) of a request whose body it parsed as JSON: a route
# that needs the parsed body itself (the posting's fingerprint) takes it from here instead of
# parsing the same bytes a third time (FastAPI parses them for the model; issue 13).
JSON_BODY_KEY = "hirepay.json_body"


class _Refused(Exception):
    def __init__(self, error: ApiError) -> None:
        self.error = error


class InputGuardMiddleware:
    """Refuses input no route could store or forward; passes everything else through unchanged."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            _check_request_line(scope)
            body = await self._read_body(scope, receive)
            if body:
                parsed = _check_json_body(body)
                if parsed is not _NOT_JSON:
                    scope[JSON_BODY_KEY] = (body, parsed)
        except _Refused as refused:
            await _answer(refused.error, send)
            return
        if body is None:
            await self.app(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body (at most max_body_bytes), or None for a request without one."""
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is None and b"transfer-encoding" not in headers:
            return None
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise _Refused(_TOO_LARGE)
        message = await receive()
        if message["type"] != "http.disconnect" and not message.get("more_body", False):
            # The whole body in one message (every posting and webhook delivery): taken as it
            # is, not put in a list to be joined (issue 13).
            body: bytes = message.get("body", b"")
            if len(body) > self.max_body_bytes:
                raise _Refused(_TOO_LARGE)
            return body
        chunks: list[bytes] = []
        size = 0
        while True:
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _Refused(_TOO_LARGE)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
            message = await receive()
        return b"".join(chunks)


def _check_request_line(scope: Scope) -> None:
    problem = text_problem(scope.get("path", ""))
    if problem is not None:
        raise _Refused(validation_failed({"path": problem}))
    query = scope.get("query_string", b"")
    # No query string (every posting and webhook delivery): nothing to parse, and parse_qsl's own
    # checks of its arguments cost ~7 Python calls per request (issue 13).
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True) if query else ():
        problem = text_problem(name) or text_problem(value)
        if problem is not None:
            field = name if text_problem(name) is None else "query"
            raise _Refused(validation_failed({field: problem}))
    for raw_name, raw_value in scope["headers"]:
        if b"\x00" in raw_value or b"\x00" in raw_name:
            name = raw_name.decode("latin-1").replace("\x00", "")
            raise _Refused(validation_failed({name or "header": "must not contain NUL characters"}))


_NOT_JSON = object()


def _check_json_body(body: bytes) -> Any:
    """A body that is JSON must be shallow and hold no NUL or lone surrogate; a body that is not
    JSON is left to the route (FastAPI answers malformed JSON itself). The parsed value, or
    _NOT_JSON."""
    try:
        return loads_json(body)
    except UntrustedInputError as exc:
        raise _Refused(validation_failed({exc.field: exc.problem})) from None
    except ValueError:
        return _NOT_JSON


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the already-read body to the app once, then waits as the server's."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(error: ApiError, send: Send) -> None:
    body = json.dumps(error.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
