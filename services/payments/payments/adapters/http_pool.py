"""The HTTP transport of the provider clients (Stripe's SDK, Fatora): HTTP/1.1 on the event loop's
own transports, many calls in flight at once to a slow provider, every connection kept alive, and
a call's cost that neither grows with the connections held nor pays for layers it does not use
(issue 13).

httpx's transport (httpcore over anyio, h11 in pure Python) cost about 2,300 Python function calls
per Stripe call, most of the payments process's CPU for its provider calls: anyio's cancel scopes,
its lock and checkpoints around every read and write (each asking sniffio, then the task, which
loop runs), h11's state machine and header validation, httpcore's pool walking every connection it
holds (probing each idle one with a `poll()` of its socket; encode/httpcore#1035) and httpx's
request and response models on both sides. Here a connection is an `asyncio.Protocol` on the
loop's transport (uvloop's in C in the services), its answer parsed by httptools (llhttp, in C,
as uvicorn uses it): a call is one write of the request, then one future that the protocol's
callbacks resolve with the whole answer. Idle connections wait on a stack per origin: the most
recently used is taken first (warm; the oldest go stale at the bottom and are dropped there),
with no walk over the others.

What it keeps of httpx: its exception classes (httpx.ConnectError, ConnectTimeout, ReadTimeout,
PoolTimeout, RemoteProtocolError, ReadError...: the callers' and the Stripe SDK's mappings tell a
timeout from an unreachable provider by them), its timeout settings (the `timeout` extension:
`connect` to open a connection, `read` the most time without a byte of the answer, `pool` waiting
for a place), and `httpx.AsyncBaseTransport` so that an `httpx.AsyncClient` (Fatora's, the SDK's
proxied path) still runs on it. HTTP/1.1 only, like httpx without `http2=True`. Answers are read
whole before the call returns (provider API answers are small JSON documents); a request's body is
written in one go and a peer that does not read it is caught by the read timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import ssl
from collections import deque
from collections.abc import Mapping
from typing import Any, cast

import httptools
import httpx
from opentelemetry import propagate, trace

from hirepay_platform import tracing

# How long an idle connection is kept for reuse (httpx's default keepalive_expiry): a server
# closes idle connections after a while of its own and a connection reused as it closes fails the
# call, so one idle longer than this is closed instead.
KEEPALIVE_EXPIRY = 5.0
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Methods whose request has a body by its meaning: sent with a Content-Length even when empty
# (some servers answer 411 to a POST without one; httpx does the same).
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_TRACER = trace.get_tracer(__name__)


class Headers(dict[str, str]):
    """An answer's headers, looked up in any case (the Stripe SDK reads `Stripe-Notice` and
    `request-id`); keys are kept lower-case, repeated headers joined by ", " as httpx does."""

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())

    @classmethod
    def of(cls, raw: list[bytes]) -> Headers:
        """From the names and values in turn as they came (latin-1, as httpx decodes them): two
        decodes and one lower-casing for them all, not one per header."""
        if not raw:
            return cls()
        names = b"\0".join(raw[0::2]).decode("latin-1").lower().split("\0")
        values = b"\0".join(raw[1::2]).decode("latin-1").split("\0")
        headers = cls(zip(names, values, strict=True))
        if len(headers) < len(names):  # a header repeated: all its values, in order
            joined: dict[str, list[str]] = {}
            for name, value in zip(names, values, strict=True):
                joined.setdefault(name, []).append(value)
            headers = cls((name, ", ".join(found)) for name, found in joined.items())
        return headers


class Answer:
    """An HTTP answer read whole: status, headers (names and values in turn, as bytes), body."""

    __slots__ = ("body", "raw_headers", "status")

    def __init__(self, status: int, raw_headers: list[bytes], body: bytes) -> None:
        self.status = status
        self.raw_headers = raw_headers
        self.body = body

    @property
    def headers(self) -> Headers:
        return Headers.of(self.raw_headers)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: the transport's callbacks feed llhttp, whose callbacks collect
    the answer and resolve the call's future with it (or with the httpx error it failed with)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: tuple[str, str, int]) -> None:
        self.loop = loop
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Answer] | None = None
        self.usable = True  # open, and every answer so far read to its end
        self.fd = -1
        self.idle_since = 0.0
        self.last_read = 0.0
        self.read_timeout: float | None = None
        self.timer: asyncio.TimerHandle | None = None
        self._raw: list[bytes] = []
        self._body: list[bytes] = []
        self._headers_done = False
        self._complete = False
        self._head = False

    # --- transport callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:
            # Bytes nobody asked for (or after the answer): the connection's framing is lost.
            self.close()
            return
        if self.read_timeout is not None:
            self.last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed answer: {exc}"))

    def eof_received(self) -> bool:
        return False  # close: an HTTP/1.1 client has nothing to send after the peer is done

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        if self.waiter is None or self.waiter.done():
            return
        if self._headers_done and not self._framed():
            # An answer without Content-Length or chunks ends where the connection does.
            self._answer()
        elif exc is not None:  # reset by the peer, or a TLS failure
            self._fail(httpx.ReadError(str(exc) or type(exc).__name__))
        elif self._headers_done:
            self._fail(
                httpx.RemoteProtocolError("peer closed connection in the middle of an answer")
            )
        else:
            self._fail(httpx.RemoteProtocolError("Server disconnected without sending a response."))

    # --- llhttp callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            self.usable = False  # a second answer to one request: the framing is lost

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw += (name, value)

    def on_headers_complete(self) -> None:
        self._headers_done = True
        if self._head and self.parser.get_status_code() >= 200:
            # llhttp cannot know the request was HEAD and would wait for the body the headers
            # describe: the answer ends here, and so does the connection (its framing is lost).
            self._complete, self.usable = True, False
            self._answer()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200:
            # 1xx (100 Continue, 103 Early Hints): the answer is still to come.
            self._raw, self._headers_done = [], False
            return
        self._complete = True
        if not self.parser.should_keep_alive():
            self.usable = False
        self._answer()

    # --- the call ---------------------------------------------------------------------------

    def _framed(self) -> bool:
        names = {name.lower() for name in self._raw[0::2]}
        return b"content-length" in names or b"transfer-encoding" in names

    def _answer(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            waiter.set_result(Answer(self.parser.get_status_code(), self._raw, body))

    def _fail(self, exc: Exception) -> None:
        self.close()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def _on_timer(self) -> None:
        """The read timeout: time without a byte of the answer (httpcore's meaning), checked
        with one timer per call that moves on when bytes came in the meantime."""
        assert self.read_timeout is not None
        due = self.last_read + self.read_timeout
        if self.loop.time() >= due:
            self._fail(httpx.ReadTimeout("timed out waiting for the answer"))
        else:
            self.timer = self.loop.call_at(due, self._on_timer)

    def send(
        self, data: bytes, read_timeout: float | None, *, head: bool = False
    ) -> asyncio.Future[Answer]:
        """Write the request; the future of its answer (a HEAD request's: only headers)."""
        assert self.transport is not None
        self.waiter = waiter = self.loop.create_future()
        self._raw, self._body, self._headers_done, self._complete = [], [], False, False
        self._head = head
        self.read_timeout = read_timeout
        if read_timeout is not None:
            self.last_read = self.loop.time()
            self.timer = self.loop.call_at(self.last_read + read_timeout, self._on_timer)
        self.transport.write(data)
        return waiter

    def done(self) -> None:
        """The call is over (answered, failed or cancelled)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        waiter, self.waiter = self.waiter, None
        if waiter is None or not waiter.done() or waiter.cancelled() or waiter.exception():
            self.close()  # left mid-answer: its framing is unknown

    def quiet(self) -> bool:
        """Nothing waiting to be read on the idle connection (httpcore's check before reuse): a
        peer that closed it just now, its end not yet seen by the loop (the last answer's task
        ran on before the loop polled again), or sent bytes nobody asked for."""
        if self.fd < 0:
            return True
        poll = select.poll()
        poll.register(self.fd, select.POLLIN)
        return not poll.poll(0)

    def close(self) -> None:
        self.usable = False
        if self.transport is not None:
            self.transport.close()


class HTTPPool(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 connections: at most `max_connections` calls in flight at once and
    as many connections open; a call waits for a place in turn. Called directly (`request`, the
    Stripe SDK's client) or as an httpx transport (`handle_async_request`)."""

    def __init__(
        self,
        *,
        max_connections: int,
        verify: ssl.SSLContext | bool = True,
        keepalive_expiry: float = KEEPALIVE_EXPIRY,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        # httpx's own TLS settings (its CA bundle when True), as its transport would use.
        self._ssl = (
            verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify)
        )
        self._max = max_connections
        self._expiry = keepalive_expiry
        self._in_flight = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._idle_count = 0
        self._origins: dict[str, tuple[tuple[str, str, int], str]] = {}

    @property
    def in_flight(self) -> int:
        """Calls in flight (each on a connection of its own)."""
        return self._in_flight

    @property
    def idle(self) -> int:
        """Connections kept for the next calls (some may have been closed by the peer since)."""
        return self._idle_count

    # --- the direct call ----------------------------------------------------------------------

    def _origin(self, url: str) -> tuple[tuple[str, str, int], str, str]:
        """(scheme, host, port), the Host header and the request target of an absolute URL; its
        origin parsed once (a provider has one)."""
        scheme, sep, rest = url.partition("://")
        authority, slash, path = rest.partition("/")
        key = url[: len(scheme) + len(sep) + len(authority)]
        found = self._origins.get(key)
        if found is None:
            parsed = httpx.URL(key)
            if (
                parsed.scheme not in _DEFAULT_PORTS
                or not parsed.host
                or parsed.userinfo
                or parsed.raw_path != b"/"  # a query or fragment without a path before it
            ):
                raise httpx.UnsupportedProtocol(f"cannot call {key!r}")
            port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
            found = (parsed.scheme, parsed.host, port), authority
            self._origins[key] = found
        return found[0], found[1], slash + path if slash else "/"

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | str | None,
        timeout: Mapping[str, float | None],
    ) -> Answer:
        """One call: `headers` as given, plus Host, and Content-Length when there is a body (or
        the method has one); its answer read whole. Raises httpx's errors."""
        origin, host, target = self._origin(url)
        if isinstance(body, str):
            body = body.encode()
        method = method.upper()
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body or method in _BODY_METHODS:
            lines.append(f"Content-Length: {len(body or b'')}")
        text = "\r\n".join(lines)
        breaks = len(lines) - 1
        # What h11 checks of a request's head: no line break or NUL smuggled in by a value.
        if text.count("\n") != breaks or text.count("\r") != breaks or "\0" in text:
            raise httpx.LocalProtocolError("a header or the target holds a line break")
        try:
            head = text.encode("ascii")
        except UnicodeEncodeError:
            raise httpx.LocalProtocolError("non-ASCII header or target") from None
        return await self._call(origin, b"%s\r\n\r\n%s" % (head, body or b""), timeout, method)

    # --- the pool -----------------------------------------------------------------------------

    async def _call(
        self,
        origin: tuple[str, str, int],
        data: bytes,
        timeout: Mapping[str, float | None],
        method: str,
    ) -> Answer:
        if tracing.http_spans():
            return await self._traced_call(origin, data, timeout, method)
        return await self._untraced_call(origin, data, timeout, method)

    async def _untraced_call(
        self,
        origin: tuple[str, str, int],
        data: bytes,
        timeout: Mapping[str, float | None],
        method: str,
    ) -> Answer:
        if self._in_flight < self._max and not self._waiting:
            self._in_flight += 1
        else:
            await self._wait_for_place(timeout.get("pool"))
        connection: _Connection | None = None
        try:
            connection = self._reuse(origin) or await self._connect(origin, timeout.get("connect"))
            return await connection.send(data, timeout.get("read"), head=method == "HEAD")
        finally:
            if connection is not None:
                connection.done()
                if connection.usable:
                    self._keep(connection)
                else:
                    connection.close()
            self._release()

    async def _traced_call(
        self,
        origin: tuple[str, str, int],
        data: bytes,
        timeout: Mapping[str, float | None],
        method: str,
    ) -> Answer:
        """The call in a CLIENT span, its W3C context sent along, when the process exports spans
        (what the OpenTelemetry httpx instrumentation does for httpx's own transport only): the
        bench's latency budget counts a provider call's round trip by it."""
        scheme, host, port = origin
        with _TRACER.start_as_current_span(
            method,
            kind=trace.SpanKind.CLIENT,
            attributes={
                "http.request.method": method,
                "server.address": host,
                "server.port": port,
                "url.scheme": scheme,
            },
        ) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            if carrier:
                end = data.index(b"\r\n") + 2
                extra = "".join(f"{k}: {v}\r\n" for k, v in carrier.items()).encode("ascii")
                data = data[:end] + extra + data[end:]
            answer = await self._untraced_call(origin, data, timeout, method)
            span.set_attribute("http.response.status_code", answer.status)
            return answer

    async def _wait_for_place(self, timeout: float | None) -> None:
        """Wait in turn until a call in flight ends and hands over its place."""
        place = asyncio.get_running_loop().create_future()
        self._waiting.append(place)
        try:
            async with asyncio.timeout(timeout):
                await place
        except BaseException as exc:
            if place.done() and not place.cancelled():
                self._release()  # handed over as this call gave up: on to the next
            else:
                place.cancel()
                with contextlib.suppress(ValueError):  # unless a release passed it by already
                    self._waiting.remove(place)
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout("no connection free in time") from None
            raise

    def _release(self) -> None:
        """A call is over: its place goes to the first call waiting, if any."""
        while self._waiting:
            place = self._waiting.popleft()
            if not place.done():
                place.set_result(None)  # still counted in flight: now that call's
                return
        self._in_flight -= 1

    def _reuse(self, origin: tuple[str, str, int]) -> _Connection | None:
        """The most recently used idle connection to `origin` still fit to use, if any."""
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.usable:
                if connection.loop.time() - connection.idle_since < self._expiry:
                    if connection.quiet():
                        return connection
                    connection.close()
                    continue
                # Idle too long, and all those below it longer still.
                connection.close()
                while idle:
                    idle.pop().close()
                    self._idle_count -= 1
                return None
        return None

    def _keep(self, connection: _Connection) -> None:
        idle = self._idle.get(connection.origin)
        if idle is None:
            idle = self._idle[connection.origin] = deque()
        connection.idle_since = now = connection.loop.time()
        while idle and (not idle[0].usable or now - idle[0].idle_since >= self._expiry):
            idle.popleft().close()
            self._idle_count -= 1
        idle.append(connection)
        self._idle_count += 1

    def _drop_idle(self) -> None:
        """Close the connection idle the longest (another origin's: this one had none)."""
        oldest = min(
            (idle for idle in self._idle.values() if idle), key=lambda idle: idle[0].idle_since
        )
        oldest.popleft().close()
        self._idle_count -= 1

    async def _connect(self, origin: tuple[str, str, int], timeout: float | None) -> _Connection:
        scheme, host, port = origin
        if self._in_flight + self._idle_count > self._max:
            self._drop_idle()  # connections open stay within max_connections
        loop = asyncio.get_running_loop()
        connection = _Connection(loop, origin)
        secure = scheme == "https"
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: connection,
                    host,
                    port,
                    ssl=self._ssl if secure else None,
                    server_hostname=host if secure else None,
                )
        except TimeoutError:
            connection.close()
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} in time") from None
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return connection

    # --- httpx's transport --------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """The call of an httpx client (its headers already hold Host and the body's length)."""
        url = request.url
        if url.scheme not in _DEFAULT_PORTS or not url.host:
            raise httpx.UnsupportedProtocol(f"cannot call {url}")
        origin = (url.scheme, url.host, url.port or _DEFAULT_PORTS[url.scheme])
        body = await request.aread()
        method = request.method
        lines = [b"%s %s HTTP/1.1" % (method.encode("ascii"), url.raw_path)]
        for name, value in request.headers.raw:
            if name.lower() not in (b"content-length", b"transfer-encoding"):
                lines.append(b"%s: %s" % (name, value))
        if body or method in _BODY_METHODS:
            lines.append(b"Content-Length: %d" % len(body))  # the body is sent whole
        data = b"\r\n".join(lines) + b"\r\n\r\n" + body
        answer = await self._call(origin, data, request.extensions.get("timeout", {}), method)
        headers = list(zip(answer.raw_headers[0::2], answer.raw_headers[1::2], strict=True))
        return httpx.Response(
            answer.status,
            headers=headers,
            stream=httpx.ByteStream(answer.body),
            extensions={"http_version": b"HTTP/1.1"},
            request=request,
        )

    async def aclose(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        self._idle_count = 0
