"""The HTTP client of webhook deliveries: HTTP/1.1 over asyncio streams, keep-alive
connections reused per origin, each request written in one piece, each answer read by
httptools' C parser (uvicorn's).

A delivery is one small POST whose answer only matters by its status, so the sandbox does not need
a general client's layers (httpx → httpcore → anyio): with them each delivery cost the sandbox
more CPU than the API call that caused it, the request went out in two writes (headers, then
body), and httpcore probed for the event loop library on every request. Failures are raised as
httpx's exceptions (ConnectError, ReadTimeout, ...), the names deliveries record.

The request's head is written as bytes, checked once for a line break a header could smuggle in,
and the answer parsed in C (h11, pure Python, validated every header and stepped a state machine
per event: about 300 Python calls per delivery, a fifth of the Stripe sandbox's per posting,
issue 13); the answer's status, its end and whether the connection may be kept are all read."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

import httptools
import httpx

_READ_CHUNK = 65536


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int


class _Answer:
    """The parser's callbacks for one answer: its end, its status and whether the connection is
    kept."""

    __slots__ = ("done", "keep_alive", "parser", "status")

    def __init__(self) -> None:
        self.done = False
        self.keep_alive = False
        self.status = 0
        self.parser = httptools.HttpResponseParser(self)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            return  # an informational answer (100 Continue): the real one follows
        if self.done:  # a second answer in the same read, to nothing asked: not the status
            self.keep_alive = False
            return
        self.done = True
        # (both read here: bytes after the answer in the same read start another message, whose
        # status the parser would give, and the parser forgets keep-alive once a message is over)
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()


class _Connection:
    """One TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def reusable(self) -> bool:
        """Still open: the server may have closed it while it waited (keep-alive timeout),
        which shows as end of file already received."""
        return not self.writer.is_closing() and not self.reader.at_eof()

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
        origin, start = self._target(url)
        head = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        if head.count("\n") != len(headers) or head.count("\r") != len(headers):
            raise httpx.LocalProtocolError("a header holds a line break")
        try:
            request = (f"{start}Content-Length: {len(body)}\r\n{head}\r\n").encode("ascii") + body
        except UnicodeEncodeError:
            raise httpx.LocalProtocolError("a header is not ASCII") from None
        connection = self._take_idle(origin)
        if connection is not None:
            try:
                return await self._exchange(connection, origin, request, timeout)
            except (httpx.RemoteProtocolError, httpx.NetworkError) as exc:
                # A kept-alive connection the server closed as it was reused: nothing was
                # answered, so the request goes again on a fresh connection (as httpx does).
                if not getattr(exc, "nothing_received", False):
                    raise
        connection = await self._connect(origin, timeout)
        return await self._exchange(connection, origin, request, timeout)

    def _target(self, url: str) -> tuple[_Origin, str]:
        """The origin of `url` and the start of a POST to it (request line and Host)."""
        found = self._targets.get(url)
        if found is None:
            # Read as httpx read it (once per URL, so its cost does not matter): the path and
            # query percent-encoded, dot segments resolved, the host IDNA-encoded (and bracketed
            # when IPv6 in Host), the default port left out; a URL it refuses (a bad port, a
            # control character) is a failed attempt, not an error the dispatcher never sees.
            try:
                parsed = httpx.URL(url)
            except httpx.InvalidURL as exc:
                raise httpx.UnsupportedProtocol(f"cannot deliver to {url!r}: {exc}") from None
            if parsed.scheme not in ("http", "https") or not parsed.raw_host:
                raise httpx.UnsupportedProtocol(f"cannot deliver to {url!r}")
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            if port > 65535:  # (httpx.URL takes any number; connecting raised OverflowError)
                raise httpx.UnsupportedProtocol(f"cannot deliver to {url!r}: invalid port")
            origin = _Origin(parsed.scheme, parsed.raw_host.decode("ascii"), port)
            target = parsed.raw_path.decode("ascii")
            found = (origin, f"POST {target} HTTP/1.1\r\nHost: {parsed.netloc.decode('ascii')}\r\n")
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
        self, connection: _Connection, origin: _Origin, request: bytes, timeout: float
    ) -> int:
        """Send the request and read the whole answer; the connection goes back to the pool
        when both sides may reuse it, else it is closed."""
        reusable = False
        try:
            answer = _Answer()
            status = await self._answer(connection, request, answer, timeout)
            reusable = answer.keep_alive
            return status
        finally:
            if reusable:
                self._put_idle(origin, connection)
            else:
                connection.close()

    async def _answer(
        self, connection: _Connection, data: bytes, answer: _Answer, timeout: float
    ) -> int:
        """Write the request, then read the answer to its end; its status code."""
        try:
            async with asyncio.timeout(timeout):
                try:
                    connection.writer.write(data)
                    await connection.writer.drain()
                except OSError as exc:
                    raise _network_error(httpx.WriteError, exc, received=False) from None
                return await self._read_answer(connection, answer)
        except TimeoutError:
            raise httpx.ReadTimeout("the endpoint did not answer in time") from None

    @staticmethod
    async def _read_answer(connection: _Connection, answer: _Answer) -> int:
        parser = answer.parser
        head = b""  # what came before the answer's end (read only if the server closes early)
        while not answer.done:
            try:
                chunk = await connection.reader.read(_READ_CHUNK)
            except OSError as exc:
                raise _network_error(httpx.ReadError, exc, bool(head)) from None
            if not chunk:
                if not head:
                    raise _network_error(httpx.RemoteProtocolError, "server disconnected", False)
                return _answered_until_closed(head, parser)
            if len(head) < _READ_CHUNK:  # (enough for the head; the body is dropped)
                head += chunk
            try:
                parser.feed_data(chunk)
            except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
                # (HttpParserUpgrade is no HttpParserError, and its text only an offset: a 101
                # switch nobody asked for, which h11 refused as a protocol error too)
                if not answer.done:
                    upgrade = isinstance(exc, httptools.HttpParserUpgrade)
                    raise httpx.RemoteProtocolError(
                        "switched protocols unasked" if upgrade else str(exc)
                    ) from None
                answer.keep_alive = False  # answered, then bytes that start no answer
        return answer.status


def _answered_until_closed(received: bytes, parser: httptools.HttpResponseParser) -> int:
    """The status of an answer the server ended by closing the connection: a body without a
    length or chunks ends so (as h11 reads it); anything else was cut short. Informational
    answers before it (no body: one head after the other) are passed over, and one that is all
    the server sent before closing is no answer."""
    head, complete, rest = received.lstrip(b"\r\n").partition(b"\r\n\r\n")
    while complete and head[9:10] == b"1":  # ("HTTP/1.1 1xx": the parser has read the line)
        head, complete, rest = rest.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")[1:]
    status = parser.get_status_code()
    if (
        complete
        and status >= 200
        and not any(line.startswith((b"content-length:", b"transfer-encoding:")) for line in lines)
    ):
        return status
    raise httpx.RemoteProtocolError("server disconnected before the end of its answer")


def _network_error(
    kind: type[httpx.TransportError], cause: object, received: bool
) -> httpx.TransportError:
    error = kind(str(cause))
    error.nothing_received = not received  # type: ignore[attr-defined]
    return error
