"""The HTTP client of webhook deliveries: HTTP/1.1 (h11) over asyncio streams, keep-alive
connections reused per origin, each request written in one piece.

A delivery is one small POST whose answer only matters by its status, so the sandbox does not need
a general client's layers (httpx → httpcore → anyio): with them each delivery cost the sandbox
more CPU than the API call that caused it, the request went out in two writes (headers, then
body), and httpcore probed for the event loop library on every request. Failures are raised as
httpx's exceptions (ConnectError, ReadTimeout, ...), the names deliveries record."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
import httpx

_READ_CHUNK = 65536


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


class _Connection:
    """One TCP connection and its h11 state machine."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)

    def reusable(self) -> bool:
        """Idle and still open: the server may have closed it while it waited (keep-alive
        timeout), which shows as end of file already received."""
        return (
            self.h11.our_state is h11.IDLE
            and not self.writer.is_closing()
            and not self.reader.at_eof()
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class WebhookHttpClient:
    """POSTs with keep-alive; at most `max_idle` idle connections kept per origin. The caller
    bounds the requests in flight (the dispatcher's slots), so connections never pile up."""

    def __init__(self, max_idle: int) -> None:
        self._max_idle = max(1, max_idle)
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._targets: dict[str, tuple[_Origin, str]] = {}
        self._ssl: ssl.SSLContext | None = None

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        """POST `body` to `url`; the answer's status code (its body is read and dropped).
        Raises httpx.TimeoutException, httpx.NetworkError or httpx.RemoteProtocolError."""
        origin, target = self._target(url)
        request_headers = [
            ("Host", origin.host_header),
            ("Content-Length", str(len(body))),
            *headers.items(),
        ]
        connection = self._take_idle(origin)
        if connection is not None:
            try:
                return await self._exchange(
                    connection, origin, target, request_headers, body, timeout
                )
            except (httpx.RemoteProtocolError, httpx.NetworkError) as exc:
                # A kept-alive connection the server closed as it was reused: nothing was
                # answered, so the request goes again on a fresh connection (as httpx does).
                if not getattr(exc, "nothing_received", False):
                    raise
        connection = await self._connect(origin, timeout)
        return await self._exchange(connection, origin, target, request_headers, body, timeout)

    def _target(self, url: str) -> tuple[_Origin, str]:
        found = self._targets.get(url)
        if found is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise httpx.UnsupportedProtocol(f"cannot deliver to {url!r}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            found = (_Origin(parts.scheme, parts.hostname, port), target)
            if len(self._targets) < 1024:  # endpoints are few; never grow without bound
                self._targets[url] = found
        return found

    def _take_idle(self, origin: _Origin) -> _Connection | None:
        pool = self._idle.get(origin)
        while pool:
            connection = pool.pop()
            if connection.reusable():
                return connection
            connection.close()
        return None

    def _put_idle(self, origin: _Origin, connection: _Connection) -> None:
        pool = self._idle.setdefault(origin, [])
        if len(pool) < self._max_idle:
            pool.append(connection)
        else:
            connection.close()

    async def _connect(self, origin: _Origin, timeout: float) -> _Connection:
        context = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    origin.host, origin.port, ssl=context
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"connecting to {origin.host}:{origin.port} timed out"
            ) from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from None
        return _Connection(reader, writer)

    async def _exchange(
        self,
        connection: _Connection,
        origin: _Origin,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        timeout: float,
    ) -> int:
        """Send the request and read the whole answer; the connection goes back to the pool
        when both sides may reuse it, else it is closed."""
        reusable = False
        try:
            conn = connection.h11
            data = (
                conn.send(h11.Request(method="POST", target=target, headers=headers))
                + conn.send(h11.Data(data=body))
                + conn.send(h11.EndOfMessage())
            )
            status = await self._answer(connection, data, timeout)
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
                reusable = True
            return status
        finally:
            if reusable:
                self._put_idle(origin, connection)
            else:
                connection.close()

    async def _answer(self, connection: _Connection, data: bytes, timeout: float) -> int:
        """Write the request, then read the answer to its end; its status code."""
        try:
            async with asyncio.timeout(timeout):
                try:
                    connection.writer.write(data)
                    await connection.writer.drain()
                except OSError as exc:
                    raise _network_error(httpx.WriteError, exc, received=False) from None
                return await self._read_answer(connection)
        except TimeoutError:
            raise httpx.ReadTimeout("the endpoint did not answer in time") from None

    @staticmethod
    async def _read_answer(connection: _Connection) -> int:
        conn = connection.h11
        received = False
        status = 0
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from None
            if event is h11.NEED_DATA:
                try:
                    chunk = await connection.reader.read(_READ_CHUNK)
                except OSError as exc:
                    raise _network_error(httpx.ReadError, exc, received) from None
                if not chunk and not received:
                    raise _network_error(httpx.RemoteProtocolError, "server disconnected", False)
                received = received or bool(chunk)
                conn.receive_data(chunk)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                return status
            elif isinstance(event, h11.ConnectionClosed):
                raise httpx.RemoteProtocolError("server disconnected before answering")


def _network_error(
    kind: type[httpx.TransportError], cause: object, received: bool
) -> httpx.TransportError:
    error = kind(str(cause))
    error.nothing_received = not received  # type: ignore[attr-defined]
    return error
