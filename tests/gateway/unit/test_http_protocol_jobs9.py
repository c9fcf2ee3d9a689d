"""The gateway's HTTP/1.1 protocol writes each answer once: its head with its body (issue 13),
and still answers a HEAD request, a 100-continue request, a streamed body and an app that fails
midway as uvicorn does."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from gateway.entrypoints.http_protocol import GatewayHttpProtocol


class FakeTransport(asyncio.Transport):
    """What the protocol writes, each write apart, and whether it closed the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _connect(app: Any) -> tuple[GatewayHttpProtocol, FakeTransport]:
    """The gateway's protocol on a new connection (a fake transport) to `app`."""
    config = Config(app=app, http=GatewayHttpProtocol, lifespan="off", access_log=False)
    config.load()
    protocol = GatewayHttpProtocol(
        config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop()
    )
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def _serve(app: Any, request: bytes) -> FakeTransport:
    protocol, transport = _connect(app)
    protocol.data_received(request)
    for _ in range(50):
        await asyncio.sleep(0)
    if protocol.cycle is not None and not protocol.cycle.response_complete:
        await asyncio.sleep(0.05)
    return transport


async def _json_app(scope: Any, receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    body = b'{"ok":true}'
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"11")],
        }
    )
    await send({"type": "http.response.body", "body": body})


GET = b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_an_answer_is_one_write_of_its_head_and_body() -> None:
    transport = await _serve(_json_app, GET)
    assert len(transport.writes) == 1
    head, body = transport.writes[0].split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 201 ")
    assert b"content-length: 11" in head.lower()
    assert body == b'{"ok":true}'
    assert not transport.closed


async def test_two_requests_on_one_connection_are_one_write_each() -> None:
    transport = await _serve(_json_app, GET + GET)
    assert len(transport.writes) == 2
    assert all(w.endswith(b'{"ok":true}') for w in transport.writes)


async def test_a_head_request_gets_its_head_without_a_body() -> None:
    transport = await _serve(_json_app, b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"".join(transport.writes).startswith(b"HTTP/1.1 201 ")
    assert b"".join(transport.writes).endswith(b"\r\n\r\n")


async def test_100_continue_goes_out_before_the_answer() -> None:
    request = b"POST /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    protocol, transport = _connect(_json_app)
    protocol.data_received(request)
    for _ in range(20):
        await asyncio.sleep(0)
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    protocol.data_received(b"{}")
    for _ in range(50):
        await asyncio.sleep(0)
    assert len(transport.writes) == 2
    assert transport.writes[1].startswith(b"HTTP/1.1 201 ")
    assert transport.writes[1].endswith(b'{"ok":true}')


async def test_a_streamed_body_joins_only_its_first_chunk() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ab", "more_body": True})
        await send({"type": "http.response.body", "body": b"cd", "more_body": False})

    transport = await _serve(app, GET)
    assert len(transport.writes) == 2
    assert transport.writes[0].startswith(b"HTTP/1.1 200 ")
    assert transport.writes[0].endswith(b"\r\n\r\n2\r\nab\r\n")
    assert transport.writes[1] == b"2\r\ncd\r\n0\r\n\r\n"


@pytest.mark.parametrize("fails", [True, False])
async def test_an_app_that_stops_after_its_head_sends_the_head_and_closes(fails: bool) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
        )
        if fails:
            raise RuntimeError("boom")

    transport = await _serve(app, GET)
    assert transport.closed
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 ")


async def test_an_answered_request_is_freed_without_the_garbage_collector() -> None:
    """Its response cycle and the transport wrapper that joins head and body do not hold each
    other once the answer is written: reference counting frees them (issue 13: the gateway's
    young collections, each a pause for every request in flight, came from these cycles)."""
    protocol, transport = _connect(_json_app)
    gc.disable()
    try:
        protocol.data_received(GET)
        for _ in range(50):
            await asyncio.sleep(0)
        assert protocol.cycle is not None and protocol.cycle.response_complete
        first = weakref.ref(protocol.cycle)
        protocol.data_received(GET)  # the next request replaces the first one's cycle
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(transport.writes) == 2
        assert first() is None
    finally:
        gc.enable()
