"""The pay-to-post load generator's HTTP/1.1 client: one keep-alive connection per worker, each
request the same pre-encoded bytes but for its Idempotency-Key, each answer read by hand.

The load generator shares the two cores with what it measures, so its CPU per posting is taken
from the system's throughput (issue 13). httpx cost it ~1.1 CPU-ms per posting (its request and
response models, h11's state machine in pure Python, httpcore's pool and anyio's locks and
checkpoints around every read and write). Here a connection is an `asyncio.Protocol` on the
loop's transport: a posting is one `transport.write` of bytes made by one `%` of a per-worker
template, then one future that `data_received` resolves with the whole answer, parsed with a few
bytes methods (in C): the status line, Content-Length, and the headers the checks need.

What it refuses rather than reads (each an error of the call, and the connection closed, never a
silent success): a chunked answer or one without Content-Length (the gateway frames every answer
it sends with Content-Length), an interim 1xx answer (no request sends `Expect`), bytes beyond
the answer or before a request, a connection closed before the answer's end, no answer within
the timeout. A worker's next posting after such an error opens a new connection."""

from __future__ import annotations

import asyncio
from typing import cast
from urllib.parse import urlsplit

# The longest a posting may wait for its answer (httpx's timeout in the load generator before).
TIMEOUT_SECONDS = 60.0
_HEAD_END = b"\r\n\r\n"


class AnswerError(ConnectionError):
    """An answer the client cannot read (refused framing, a broken connection, a timeout)."""


class Answer:
    """What a posting's checks read of an answer: its status, whether it carried the
    `Idempotent-Replayed` header (whatever its value), its body."""

    __slots__ = ("body", "replayed", "status")

    def __init__(self, status: int, replayed: bool, body: bytes) -> None:
        self.status = status
        self.replayed = replayed
        self.body = body


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection with at most one request in flight; `data_received` collects the
    answer's bytes and resolves the request's future once Content-Length's worth has come."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.open = True
        self.waiter: asyncio.Future[Answer] | None = None
        self._buffer = b""
        # Bytes of the whole answer (head and body) once its head is read, else -1.
        self._length = -1
        self._head = 0
        self._status = 0
        self._replayed = False
        self._keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        why = f": {exc}" if exc is not None else ""
        self.fail(f"the connection was closed before the answer's end{why}")

    def eof_received(self) -> bool:
        return False  # close: nothing is sent after the peer is done

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            self.fail("bytes came that no request asked for")
            return
        buffer = self._buffer + data if self._buffer else data
        if self._length < 0:
            end = buffer.find(_HEAD_END)
            if end < 0:
                self._buffer = buffer
                return
            if not self._read_head(buffer[:end].lower()):
                return
            self._head = end + 4
            self._length += self._head
        if len(buffer) < self._length:
            self._buffer = buffer
            return
        if len(buffer) > self._length:
            self.fail("bytes came beyond the answer's Content-Length")
            return
        self._buffer = b""
        self._length = -1
        if not self._keep_alive:
            self.close()  # the peer closes it after this answer
        self.waiter.set_result(Answer(self._status, self._replayed, buffer[self._head :]))

    def _read_head(self, head: bytes) -> bool:
        """Status, Content-Length and the headers the checks need, from the answer's head
        (lower-cased); False (the call failed) for a head this client does not read."""
        if not head.startswith(b"http/1.1 ") or not head[9:12].isdigit():
            self.fail(f"not an HTTP/1.1 status line: {head[:40]!r}")
            return False
        self._status = int(head[9:12])
        if self._status < 200:
            self.fail(f"an interim {self._status} answer (not read by this client)")
            return False
        if b"\r\ntransfer-encoding:" in head:
            self.fail("a chunked answer (this client reads only Content-Length framing)")
            return False
        start = head.find(b"\r\ncontent-length:")
        if start < 0:
            self.fail("an answer without Content-Length (this client reads no other framing)")
            return False
        line_end = head.find(b"\r\n", start + 2)
        value = head[start + 17 : line_end if line_end > 0 else len(head)].strip()
        if not value.isdigit():
            self.fail(f"a malformed Content-Length: {value!r}")
            return False
        self._length = int(value)
        self._replayed = b"\r\nidempotent-replayed:" in head
        self._keep_alive = b"\r\nconnection: close" not in head
        return True

    def fail(self, why: str) -> None:
        self.close()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(AnswerError(why))

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()


class PostingClient:
    """One worker's client: requests to one origin on one keep-alive connection (opened on the
    first request and again after one that failed), one at a time."""

    def __init__(self, url: str, *, timeout: float = TIMEOUT_SECONDS) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"an http:// origin is needed, not {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.authority = parts.netloc
        self.timeout = timeout
        self._connection: _Connection | None = None

    def numbered(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        """A template of requests that differ only in a number ending the last header's value:
        `template % number` is one request's bytes (the request line, Host, `headers`, the body
        with its Content-Length), all of it encoded once, only the number formatted per request
        (the fixed parts' own `%` escaped)."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.authority}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.insert(-1, f"Content-Length: {len(body)}")
        if any("\r" in line or "\n" in line for line in lines):
            raise ValueError("a header or the path holds a line break")
        head = "\r\n".join(lines).encode("ascii")
        return head.replace(b"%", b"%%") + b"%d\r\n\r\n" + body.replace(b"%", b"%%")

    async def send(self, request: bytes) -> Answer:
        """Write `request` (whole bytes of one request) and wait for its answer."""
        connection = self._connection
        if connection is None or not connection.open:
            connection = self._connection = await self._connect()
        waiter = connection.waiter = connection.loop.create_future()
        timer = connection.loop.call_later(self.timeout, connection.fail, "no answer in time")
        connection.transport.write(request)  # type: ignore[union-attr]
        try:
            return await waiter
        finally:
            timer.cancel()
            connection.waiter = None
            if waiter.cancelled():  # left mid-answer: its framing is lost
                connection.close()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        connection = _Connection(loop)
        await loop.create_connection(lambda: connection, self.host, self.port)
        return connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
