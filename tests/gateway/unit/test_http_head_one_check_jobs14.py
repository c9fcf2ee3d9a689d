"""The gateway writes an answer's head with one check of all its headers instead of uvicorn's two
regular expressions and a lowering per header (issue 13, PAY-11: the same bytes and the same
refusals): every head below is written byte for byte as uvicorn's own protocol writes it, with
the same connection handling, and a head uvicorn refuses is refused the same way."""

from __future__ import annotations

import asyncio
import pstats
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.entrypoints.http_protocol import GatewayHttpProtocol
from tests.gateway.unit.test_http_protocol_jobs9 import FakeTransport
from tests.support.python_calls import profiled

DEFAULT_HEADERS = [(b"date", b"Wed, 02 Dec 2026 07:00:00 GMT"), (b"server", b"uvicorn")]

# The head of a posting's answer as the gateway sends it (security headers, trace id, limits).
POSTING_HEADERS = [
    (b"content-length", b"11"),
    (b"content-type", b"application/json"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"x-trace-id", b"4bf92f3577b34da6a3ce929d0e0e4736"),
    (b"x-ratelimit-limit", b"10"),
    (b"x-ratelimit-remaining", b"9"),
    (b"x-ratelimit-reset", b"60"),
]

BODY = b'{"ok":true}'

HEADS: dict[str, tuple[int, list[Any]]] = {
    "a posting's answer": (201, POSTING_HEADERS),
    "no headers (chunked)": (200, []),
    "no content-length (chunked)": (200, [(b"content-type", b"text/plain")]),
    "chunked asked for": (200, [(b"transfer-encoding", b"Chunked")]),
    "content-length, then chunked": (
        200,
        [(b"content-length", b"11"), (b"transfer-encoding", b"chunked")],
    ),
    "chunked, then content-length": (
        200,
        [(b"transfer-encoding", b"chunked"), (b"content-length", b"11")],
    ),
    "two content-lengths": (200, [(b"content-length", b"11"), (b"content-length", b"99")]),
    "connection close": (200, [(b"content-length", b"11"), (b"connection", b"keep-alive, Close")]),
    "connection keep-alive": (200, [(b"content-length", b"11"), (b"connection", b"keep-alive")]),
    "an upper-case name (lowered)": (
        200,
        [(b"Content-Length", b"11"), (b"X-Trace-Id", b"abc"), (b"Connection", b"close")],
    ),
    "a value with a tab, colons and non-ASCII": (
        200,
        [(b"content-length", b"11"), (b"x-note", b"a\tb: c \xc3\xa9")],
    ),
    "a non-ASCII name": (200, [(b"content-length", b"11"), (b"x-\xc3\xa9", b"1")]),
    "an empty value": (200, [(b"content-length", b"11"), (b"x-empty", b"")]),
    "204 without a length": (204, []),
    "304 without a length": (304, [(b"etag", b'"x"')]),
    "headers as a tuple of lists": (200, ([b"content-length", b"11"], [b"x-a", b"1"])),
    "headers as a generator": (200, ((n, v) for n, v in POSTING_HEADERS)),  # type: ignore[dict-item]
    "a bytearray value": (200, [(b"content-length", bytearray(b"11"))]),
    # uvicorn refuses these while writing the head (the app's error: a 500 is too late, the
    # connection is closed with nothing written).
    "a name with a space": (200, [(b"content-length", b"11"), (b"x bad", b"1")]),
    "a name with a colon": (200, [(b"content-length", b"11"), (b"x:bad", b"1")]),
    "a value with CR LF": (200, [(b"content-length", b"11"), (b"x-bad", b"1\r\nx-evil: 1")]),
    "a value with LF": (200, [(b"content-length", b"11"), (b"x-bad", b"1\nx")]),
    "a value ending in CR": (200, [(b"x-bad", b"1\r"), (b"content-length", b"11")]),
    "a value starting with LF": (200, [(b"content-length", b"11"), (b"x-bad", b"\nx-a: 1")]),
    "a name holding a whole header": (
        200,
        [(b"content-length", b"11"), (b"x-a: 1\r\nx-b", b"2")],
    ),
    "a name with CR LF": (200, [(b"x-a\r\n", b"1"), (b"content-length", b"11")]),
    "a value with NUL": (200, [(b"content-length", b"11"), (b"x-bad", b"1\x00")]),
    "a str header": (200, [("content-length", "11")]),
    "three items in a header": (200, [(b"content-length", b"11", b"x")]),
    "a bad content-length": (200, [(b"content-length", b"eleven")]),
}

REFUSED = {
    "a name with a space",
    "a name with a colon",
    "a value with CR LF",
    "a value with LF",
    "a value ending in CR",
    "a value starting with LF",
    "a name holding a whole header",
    "a name with CR LF",
    "a value with NUL",
    "a str header",
    "three items in a header",
    "a bad content-length",
}


def _app(status: int, headers: Any) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if status not in (204, 304):
            await send({"type": "http.response.body", "body": BODY})

    return app


def _make(http: type[HttpToolsProtocol], app: Any) -> tuple[HttpToolsProtocol, FakeTransport]:
    config = Config(app=app, http=http, lifespan="off", access_log=False)
    config.load()
    state = ServerState()
    state.default_headers = list(DEFAULT_HEADERS)
    protocol = http(
        config=config, server_state=state, app_state={}, _loop=asyncio.get_running_loop()
    )
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def _serve(http: type[HttpToolsProtocol], app: Any, request: bytes) -> tuple[bytes, bool]:
    protocol, transport = _make(http, app)
    protocol.data_received(request)
    for _ in range(50):
        await asyncio.sleep(0)
    return b"".join(transport.writes), transport.closed


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("version", ["1.1", "1.0"])
@pytest.mark.parametrize("case", list(HEADS))
async def test_every_head_is_written_as_uvicorn_writes_it(
    case: str, version: str, method: str
) -> None:
    status, headers = HEADS[case]
    request = f"{method} /x HTTP/{version}\r\nHost: x\r\n\r\n".encode()

    def app() -> Any:  # (a generator is used up by one answer: a new one for each protocol)
        fresh = (
            ((n, v) for n, v in POSTING_HEADERS) if case == "headers as a generator" else headers
        )
        return _app(status, fresh)

    ours = await _serve(GatewayHttpProtocol, app(), request)
    uvicorns = await _serve(HttpToolsProtocol, app(), request)
    assert ours == uvicorns
    if case in REFUSED:
        assert uvicorns == (b"", True)  # (refused: nothing written, the connection closed)
    else:
        assert uvicorns[0].startswith(f"HTTP/1.1 {status} ".encode())


async def test_two_answers_on_one_connection_are_uvicorns() -> None:
    request = b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n" * 2
    app = _app(201, POSTING_HEADERS)
    assert await _serve(GatewayHttpProtocol, app, request) == await _serve(
        HttpToolsProtocol, app, request
    )


async def test_the_head_of_a_postings_answer_is_checked_in_a_few_calls() -> None:
    """uvicorn's own `send` of this head is about 60 Python calls (two regular expressions, a
    lowering and a list extension per header); the gateway's is one check of the whole block."""

    async def idle_app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.Event().wait()  # (the test sends this request's answer itself)

    protocol, transport = _make(GatewayHttpProtocol, idle_app)
    protocol.data_received(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    cycle = protocol.cycle
    assert cycle is not None
    start = {"type": "http.response.start", "status": 201, "headers": POSTING_HEADERS}
    with profiled() as profile:
        await cycle.send(start)
    calls = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]

    assert calls <= 20, calls
    await cycle.send({"type": "http.response.body", "body": BODY})
    assert cycle.response_complete
    head, body = b"".join(transport.writes).split(b"\r\n\r\n", 1)
    assert body == BODY
    assert head.split(b"\r\n")[1:] == [
        b"%s: %s" % header for header in (*DEFAULT_HEADERS, *POSTING_HEADERS)
    ]
    for task in list(protocol.tasks):
        task.cancel()
