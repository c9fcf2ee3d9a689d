"""The provider clients' transport (http_pool.SpreadTransport): every call in flight at once up to
its cap, connections kept alive, and a call's pool bookkeeping that does not grow with the
connections a burst of slow calls left open (issue 13)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable

import httpcore
import httpx
import pytest

from payments.adapters.http_pool import POOL_SIZE, SpreadTransport


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
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                self.in_flight += 1
                self.most = max(self.most, self.in_flight)
                if self.release is not None:
                    await self.release.wait()
                else:
                    await asyncio.sleep(self.delay)
                self.in_flight -= 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
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


async def _calls(client: httpx.AsyncClient, url: str, n: int) -> None:
    responses = await asyncio.gather(*(client.get(url) for _ in range(n)))
    assert all(r.status_code == 200 and r.text == "ok" for r in responses)


async def _burst(client: httpx.AsyncClient, server: SlowServer, n: int) -> None:
    """`n` calls all in flight at once (the server holds them until all have arrived)."""
    server.release = asyncio.Event()
    calls = asyncio.ensure_future(_calls(client, server.url, n))
    await server.wait_in_flight(n)
    server.release.set()
    await calls
    server.release = None


@pytest.fixture
def expiry_probes(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """How many times httpcore has asked a connection whether it expired (each such probe of an
    idle connection is a poll() of its socket), as a counter to read."""
    probes = 0
    original = httpcore.AsyncHTTPConnection.has_expired

    def counted(self: httpcore.AsyncHTTPConnection) -> bool:
        nonlocal probes
        probes += 1
        return original(self)

    monkeypatch.setattr(httpcore.AsyncHTTPConnection, "has_expired", counted)
    return lambda: probes


async def test_a_call_after_a_burst_of_slow_calls_probes_one_small_pool(
    expiry_probes: Callable[[], int],
) -> None:
    """120 slow calls at once leave 120 connections open; a call then looks at the few of one
    pool, not at all of them (one httpx pool probes every one of its connections twice per call:
    about 240 probes here, growing with the burst)."""
    transport = SpreadTransport(max_connections=256)
    async with SlowServer().running() as server, httpx.AsyncClient(transport=transport) as client:
        await _burst(client, server, 120)
        assert server.connections == 120
        before = expiry_probes()
        for _ in range(10):
            await _calls(client, server.url, 1)
        assert (expiry_probes() - before) / 10 <= 2 * POOL_SIZE
        assert server.connections == 120  # served by connections kept alive
        assert transport.in_flight == [0] * len(transport.in_flight)


async def test_calls_in_flight_are_capped_at_max_connections_over_all_pools() -> None:
    """The cap is the one the settings give (provider_max_connections), not a pool's size:
    20 calls at once reach a server 20 at once; 30 with a cap of 20 reach it 20 at a time."""
    async with SlowServer().running() as server:
        server.release = asyncio.Event()
        async with httpx.AsyncClient(transport=SpreadTransport(max_connections=20)) as client:
            calls = asyncio.gather(*(client.get(server.url) for _ in range(30)))
            await server.wait_in_flight(20)
            await asyncio.sleep(0.1)  # nothing more arrives while the first 20 hang
            assert server.in_flight == 20
            server.release.set()
            responses = await calls
        assert [r.status_code for r in responses] == [200] * 30
        assert server.most == 20


async def test_a_quiet_client_keeps_to_one_pool() -> None:
    """One call at a time always goes to the first pool: one warm connection, not one per pool."""
    transport = SpreadTransport(max_connections=64)
    async with SlowServer().running() as server, httpx.AsyncClient(transport=transport) as client:
        for _ in range(20):
            await _calls(client, server.url, 1)
        assert server.connections == 1


async def test_failed_and_cancelled_calls_free_their_place() -> None:
    """A call that fails (nobody listens) or is cancelled while it waits leaves no call counted
    in flight, so its pool is not shunned afterwards."""
    transport = SpreadTransport(max_connections=16)
    async with httpx.AsyncClient(transport=transport, timeout=5) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("http://127.0.0.1:9/")  # discard port: refused
        async with SlowServer(delay=30).running() as server:
            call = asyncio.ensure_future(client.get(server.url))
            await server.wait_in_flight(1)
            assert sum(transport.in_flight) == 1
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call
    assert transport.in_flight == [0] * len(transport.in_flight)
