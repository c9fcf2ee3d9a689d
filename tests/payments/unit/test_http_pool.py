"""The provider clients' transport (http_pool.HTTPPool): HTTP/1.1 on the event loop's transports
with httptools (issue 13). Every call in flight at once up to its cap, connections kept alive and
dropped when the peer closes them or they idle too long, httpx's errors for each way a call fails
(a timeout stays a timeout, a refused connection stays a connection error), answers framed every
way HTTP/1.1 frames them, and a call's cost that does not grow with the connections held."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import pstats
import re
import socket
import ssl
import struct
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import uvloop
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from payments.adapters import http_pool
from payments.adapters.http_pool import Headers, HTTPPool
from tests.support.python_calls import profiled

TIMEOUTS = httpx.Timeout(5.0).as_dict()
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?i)content-length: *(\d+)", head)
    return head, await reader.readexactly(int(length.group(1)) if length else 0)


class SlowServer:
    """An HTTP/1.1 server that keeps connections alive and answers each request after `delay`
    (or once `release` is set); it counts connections, requests in flight and the most at once."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.release: asyncio.Event | None = None
        self.connections = 0
        self.in_flight = 0
        self.most = 0
        self.url = ""
        self._handlers: set[asyncio.Task[None]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await read_request(reader)
                self.in_flight += 1
                self.most = max(self.most, self.in_flight)
                if self.release is not None:
                    await self.release.wait()
                else:
                    await asyncio.sleep(self.delay)
                self.in_flight -= 1
                writer.write(OK)
                await writer.drain()
        writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SlowServer]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        async with server:
            try:
                yield self
            finally:
                for handler in self._handlers:
                    handler.cancel()
                await asyncio.gather(*self._handlers, return_exceptions=True)

    async def wait_in_flight(self, n: int) -> None:
        for _ in range(500):
            if self.in_flight >= n:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{self.in_flight} requests in flight, not {n}")


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """A server running `handler` per connection; its base URL."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def get(client: HTTPPool, url: str, **timeouts: float) -> http_pool.Answer:
    return await client.request("GET", url, {}, None, {**TIMEOUTS, **timeouts})


async def _calls(pool: HTTPPool, url: str, n: int) -> None:
    answers = await asyncio.gather(*(get(pool, url) for _ in range(n)))
    assert all(a.status == 200 and a.body == b"ok" for a in answers)


async def _burst(pool: HTTPPool, server: SlowServer, n: int) -> None:
    """`n` calls all in flight at once (the server holds them until all have arrived)."""
    server.release = asyncio.Event()
    calls = asyncio.ensure_future(_calls(pool, server.url, n))
    await server.wait_in_flight(n)
    server.release.set()
    await calls
    server.release = None


async def _python_calls(pool: HTTPPool, url: str, n: int) -> int:
    """Python function calls (cProfile's count) made by `n` calls one after the other."""
    with profiled() as profile:
        for _ in range(n):
            await get(pool, url)
    return sum(entry[1] for entry in pstats.Stats(profile).stats.values())  # type: ignore[attr-defined]


async def test_a_call_after_a_burst_costs_what_it_costs_with_one_connection() -> None:
    """120 slow calls at once leave 120 connections open; a call then costs the same Python
    calls as with one connection open (httpcore's pool walked and probed them all, twice per
    call), and is served by a connection kept alive."""
    async with SlowServer().running() as server:
        quiet = HTTPPool(max_connections=256)
        await _calls(quiet, server.url, 1)
        one = await _python_calls(quiet, server.url, 10)
        busy = HTTPPool(max_connections=256)
        await _burst(busy, server, 120)
        assert server.connections == 121 and busy.idle == 120
        after_burst = await _python_calls(busy, server.url, 10)
        assert after_burst <= one + 10  # the same, bar a stray extra read of an answer in parts
        assert server.connections == 121  # no new connection: kept alive
        assert busy.in_flight == 0
        await quiet.aclose()
        await busy.aclose()


async def test_calls_in_flight_are_capped_at_max_connections() -> None:
    """The cap is the one the settings give (provider_max_connections): 30 calls with a cap of
    20 reach the server 20 at a time, on 20 connections, and all are answered."""
    async with SlowServer().running() as server:
        server.release = asyncio.Event()
        pool = HTTPPool(max_connections=20)
        calls = asyncio.gather(*(get(pool, server.url) for _ in range(30)))
        await server.wait_in_flight(20)
        await asyncio.sleep(0.1)  # nothing more arrives while the first 20 hang
        assert server.in_flight == 20 and pool.in_flight == 20
        server.release.set()
        answers = await calls
        assert [a.status for a in answers] == [200] * 30
        assert server.most == 20 and server.connections == 20
        assert pool.in_flight == 0
        await pool.aclose()


async def test_a_call_waits_for_a_place_no_longer_than_the_pool_timeout() -> None:
    async with SlowServer().running() as server:
        server.release = asyncio.Event()
        pool = HTTPPool(max_connections=1)
        first = asyncio.ensure_future(get(pool, server.url))
        await server.wait_in_flight(1)
        with pytest.raises(httpx.PoolTimeout):
            await get(pool, server.url, pool=0.1)
        assert pool.in_flight == 1
        waiting = asyncio.ensure_future(get(pool, server.url))
        await asyncio.sleep(0.05)
        waiting.cancel()  # gives up its turn: no place lost or taken
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        server.release.set()
        assert (await first).body == b"ok"
        assert pool.in_flight == 0
        assert (await get(pool, server.url)).status == 200
        await pool.aclose()


async def test_a_quiet_client_keeps_one_connection() -> None:
    """One call at a time always takes the connection the last one left."""
    pool = HTTPPool(max_connections=64)
    async with SlowServer().running() as server:
        for _ in range(20):
            await _calls(pool, server.url, 1)
        assert server.connections == 1
    await pool.aclose()


async def test_refused_and_cancelled_calls_free_their_place() -> None:
    """A refused connection is httpx.ConnectError (a provider unreachable, not a timeout); a call
    cancelled while it waits leaves nothing in flight and its connection is not reused (its
    answer may still come)."""
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    port = refused.getsockname()[1]
    refused.close()
    pool = HTTPPool(max_connections=16)
    with pytest.raises(httpx.ConnectError) as failed:
        await get(pool, f"http://127.0.0.1:{port}/")
    assert not isinstance(failed.value, httpx.TimeoutException)
    assert pool.in_flight == 0
    async with SlowServer(delay=30).running() as server:
        call = asyncio.ensure_future(get(pool, server.url))
        await server.wait_in_flight(1)
        assert pool.in_flight == 1
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        assert pool.in_flight == 0 and pool.idle == 0
    await pool.aclose()


async def test_the_read_timeout_is_the_longest_silence() -> None:
    """httpcore's meaning: no byte of the answer for `read` seconds is httpx.ReadTimeout (and the
    connection is closed); an answer trickling in faster than that is read even when the whole
    takes longer."""
    trickle = [b"HTTP/1.1 200 OK\r\n", b"Content-Length: 2\r\n\r\n", b"o", b"k"]

    async def slow_parts(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            head, _ = await read_request(reader)
            if b"/silent" in head:
                await reader.read()
                return
            for part in trickle:
                await asyncio.sleep(0.15)
                writer.write(part)
            await writer.drain()
            await reader.read()

    pool = HTTPPool(max_connections=4)
    async with serving(slow_parts) as url:
        answer = await get(pool, f"{url}/trickle", read=0.4)
        assert (answer.status, answer.body) == (200, b"ok")  # 0.6 s in all
        with pytest.raises(httpx.ReadTimeout):
            await get(pool, f"{url}/silent", read=0.2)
        assert pool.in_flight == 0
    await pool.aclose()


async def test_a_connection_the_peer_closed_is_not_reused() -> None:
    """A server that closes a kept-alive connection after its answer (its idle timeout), or says
    `Connection: close`: the next call opens a new connection and is answered."""
    connections = 0

    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        head, _ = await read_request(reader)
        if b"/say-close" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            await asyncio.sleep(0.5)  # the client must not wait for the close to reuse it
        else:
            writer.write(OK)
            await writer.drain()
        writer.close()

    pool = HTTPPool(max_connections=4)
    async with serving(answer_once) as url:
        assert (await get(pool, f"{url}/a")).body == b"ok"
        await asyncio.sleep(0.05)  # the close arrives while the connection is idle
        assert (await get(pool, f"{url}/b")).body == b"ok"
        assert (await get(pool, f"{url}/say-close")).body == b"ok"
        assert pool.idle == 0
        assert (await get(pool, f"{url}/c")).body == b"ok"
    assert connections == 4
    await pool.aclose()


async def test_connections_idle_too_long_are_not_reused() -> None:
    async with SlowServer().running() as server:
        pool = HTTPPool(max_connections=4, keepalive_expiry=0.05)
        await _calls(pool, server.url, 1)
        await _calls(pool, server.url, 1)
        assert server.connections == 1
        await asyncio.sleep(0.1)
        await _calls(pool, server.url, 1)
        assert server.connections == 2
        await pool.aclose()


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\n\r\n",
            b"ok!!!",
        ),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end", b"to the end"),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + OK, b"ok"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
    ],
    ids=["chunked", "until-close", "100-continue", "no-content"],
)
async def test_answers_framed_every_way(answer: bytes, body: bytes) -> None:
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        if b"Connection: close" in answer:
            writer.close()
        else:
            with contextlib.suppress(ConnectionError):
                await reader.read()

    pool = HTTPPool(max_connections=2)
    async with serving(reply) as url:
        got = await get(pool, f"{url}/x")
        assert (got.status, got.body) == (
            int(answer.split(b" ")[1]) if b"100" not in answer[:15] else 200,
            body,
        )
    await pool.aclose()


@pytest.mark.parametrize(
    "answer",
    [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", b"NOT HTTP AT ALL\r\n\r\n"],
    ids=["nothing", "cut-short", "garbage"],
)
async def test_broken_answers_are_protocol_errors(answer: bytes) -> None:
    """Never a timeout (the outcome is not "slow"), never an answer."""

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        writer.close()

    pool = HTTPPool(max_connections=2)
    async with serving(reply) as url:
        with pytest.raises(httpx.RemoteProtocolError):
            await get(pool, f"{url}/x")
    assert pool.in_flight == 0 and pool.idle == 0
    await pool.aclose()


async def test_a_connection_reset_is_a_read_error() -> None:
    """A peer that resets the connection instead of answering: httpx.ReadError (unreachable to
    the callers, never a timeout)."""

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    pool = HTTPPool(max_connections=2)
    async with serving(reset) as url:
        with pytest.raises(httpx.ReadError):
            await get(pool, f"{url}/x")
    assert pool.in_flight == 0
    await pool.aclose()


async def test_only_absolute_http_urls_are_called() -> None:
    pool = HTTPPool(max_connections=2)
    for url in ("ftp://example.com/x", "http://user:pw@example.com/x", "http://example.com?q=1"):
        with pytest.raises(httpx.UnsupportedProtocol):
            await get(pool, url)
    assert pool.in_flight == 0


async def test_a_request_goes_out_as_given_and_unsafe_headers_are_refused() -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                seen.append(await read_request(reader))
                writer.write(OK)
                await writer.drain()

    pool = HTTPPool(max_connections=2)
    async with serving(record) as url:
        await pool.request("post", f"{url}/v1/x?a=1", {"Idempotency-Key": "k1"}, "b=2", TIMEOUTS)
        await pool.request("POST", f"{url}/v1/cancel", {}, None, TIMEOUTS)
        for bad in ("k\r\nX-Evil: 1", "k\nX", "caf\u00e9"):
            with pytest.raises(httpx.LocalProtocolError):
                await pool.request("POST", f"{url}/v1/x", {"Idempotency-Key": bad}, "", TIMEOUTS)
    host = url.removeprefix("http://").encode()
    assert seen[0] == (
        b"POST /v1/x?a=1 HTTP/1.1\r\nHost: " + host + b"\r\nIdempotency-Key: k1\r\n"
        b"Content-Length: 3\r\n\r\n",
        b"b=2",
    )
    assert b"Content-Length: 0\r\n" in seen[1][0]  # a POST always says its length
    assert len(seen) == 2
    await pool.aclose()


async def test_a_head_answer_ends_with_its_headers() -> None:
    """llhttp does not know the request was HEAD: the answer must not wait for the body its
    Content-Length describes."""

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n")
        await writer.drain()
        with contextlib.suppress(ConnectionError):
            await reader.read()

    pool = HTTPPool(max_connections=2)
    async with serving(reply) as url:
        answer = await pool.request("HEAD", f"{url}/x", {}, None, {**TIMEOUTS, "read": 1.0})
        assert (answer.status, answer.body, answer.headers["content-length"]) == (200, b"", "20")
    await pool.aclose()


def test_answer_headers_are_read_in_any_case_and_repeats_joined() -> None:
    assert Headers.of([]) == {}
    headers = Headers.of([b"Request-Id", b"req_1", b"Vary", b"a", b"vary", b"b"])
    assert headers["request-id"] == headers["REQUEST-ID"] == "req_1"
    assert headers.get("Stripe-Notice") is None and "Request-Id" in headers
    assert headers["Vary"] == "a, b"


async def test_an_httpx_client_runs_on_the_pool() -> None:
    """Fatora's client: its JSON body goes out with its length, a gzip answer comes back
    decoded (by httpx's response), and its timeouts are the pool's."""
    seen: list[tuple[bytes, bytes]] = []

    async def api(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head, body = await read_request(reader)
                seen.append((head, body))
                if b"/slow" in head:
                    await asyncio.sleep(5)
                data = gzip.compress(json.dumps({"status": "SUCCESS"}).encode())
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data)
                )
                await writer.drain()

    async with (
        serving(api) as url,
        httpx.AsyncClient(
            base_url=url, transport=HTTPPool(max_connections=4), timeout=0.3
        ) as client,
    ):
        response = await client.post("/v1/pay", json={"amount": 5})
        assert response.json() == {"status": "SUCCESS"}
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/slow")
    head, body = seen[0]
    assert json.loads(body) == {"amount": 5}
    assert re.search(rb"(?i)content-length: %d\r\n" % len(body), head)


async def test_a_call_has_its_client_span_when_spans_are_exported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bench's latency budget counts a provider call's round trip by its CLIENT span; the
    W3C context goes along (only when the process exports spans)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(http_pool, "_TRACER", provider.get_tracer("test"))
    monkeypatch.setattr(http_pool.tracing, "http_spans", lambda: True)
    heads: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append((await read_request(reader))[0])
        writer.write(OK)
        await writer.drain()
        await reader.read()

    pool = HTTPPool(max_connections=2)
    async with serving(record) as url:
        await get(pool, f"{url}/v1/x")
    [span] = exporter.get_finished_spans()
    assert span.kind.name == "CLIENT" and span.attributes is not None
    assert span.attributes["http.response.status_code"] == 200
    assert f"traceparent: 00-{span.context.trace_id:032x}-".encode() in heads[0]
    await pool.aclose()


def test_on_uvloop_over_tls(tmp_path: Path) -> None:
    """The services' loop, and https as to Stripe: a certificate checked against the CA given
    (a self-signed one here), connections kept alive across calls; one not trusted is refused
    as a connection error."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def scenario() -> None:
        connections = 0

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                while True:
                    await read_request(reader)
                    writer.write(OK)
                    await writer.drain()

        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_tls)
        url = f"https://localhost:{server.sockets[0].getsockname()[1]}/v1/x"
        async with server:
            pool = HTTPPool(max_connections=4, verify=ssl.create_default_context(cafile=cert))
            for _ in range(3):
                assert (await get(pool, url)).body == b"ok"
            assert connections == 1
            await pool.aclose()
            untrusting = HTTPPool(max_connections=4)
            with pytest.raises(httpx.ConnectError):
                await get(untrusting, url)
            assert untrusting.in_flight == 0

    uvloop.run(scenario())
