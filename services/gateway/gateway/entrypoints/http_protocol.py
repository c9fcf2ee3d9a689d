"""The gateway's HTTP/1.1 protocol for uvicorn: httptools reads requests, and a request it refuses
before its head is complete goes to h11, as every request did before (issue 13).

h11 parses, validates and frames in Python: about half of the gateway's Python calls per posting
were h11's. httptools (llhttp, in C) does the same for a fraction of that, but it refuses some
requests h11 accepts, e.g. a method it does not know, with uvicorn's plain-text 400 outside the
error contract (PAY-11), the security headers and the metrics; behind h11 such a request reaches
the edge middleware. So when httptools refuses a request whose head it was still reading, the
connection is handed to uvicorn's h11 protocol with that request's bytes as received, and h11
decides: it refuses what it refused before (its own 400) and passes on what it accepted, and it
serves the rest of the connection. Requests both parsers accept go to the same app either way.

A head that is not known from its first byte (it began in a chunk after another request, as with
pipelining) or an error after the head (a malformed body) keeps httptools' answer, as does a refusal
while an earlier response is still being written: h11 cannot take over a half-served connection.

uvicorn writes a response's head when the app starts the response and its body when the app sends
it: two writes, each a send() system call and a TCP segment of its own that wakes the client (the
load generator, or the provider delivering a webhook) once more. The gateway's answers are whole
bodies sent right after their heads, so each request's writes go through `_HeadWithBody`, which
holds the head and writes it with the first part of the body: one write per answer (issue 13).

uvicorn also checks and lower-cases an answer's head one header at a time (two regular expressions,
a lowering and a list extension each: ~40 Python calls per answer, ~120 per posting with its two
webhook deliveries). `_GatewayResponseCycle` writes the same head from one block checked by one
regular expression that accepts exactly the heads uvicorn's checks accept with names already in
lower case; any other head (an invalid or an upper-case name, an invalid value, a header that is
not bytes) goes uvicorn's own way, which refuses or lowers it as before (issue 13).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httptools
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; a request it refuses while reading its head goes to h11."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The bytes of the request whose head is being read, from its first byte; None when no
        # head is being read or its start is not known.
        self._head: list[bytes] | None = None
        self._chunk = b""
        self._completed_in_chunk = False

    def data_received(self, data: bytes) -> None:
        if self._head is not None:
            self._head.append(data)
        self._chunk = data
        self._completed_in_chunk = False
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            if self._head is not None and self._idle():
                self._hand_to_h11(b"".join(self._head))
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
        finally:
            self._chunk = b""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # From the chunk's first byte, unless another request ended earlier in the same chunk.
        self._head = None if self._completed_in_chunk else [self._chunk]

    def on_headers_complete(self) -> None:
        self._head = None  # the request is the app's now; httptools reads its body
        super().on_headers_complete()
        cycle = self.cycle
        # Only the cycle just made for this request (an upgrade made none), and not for HEAD:
        # its head is all uvicorn writes, with no body write to join it.
        if cycle is not None and cycle.scope is self.scope:
            # The cycle's task has been created but not run yet: it sends through this class.
            cycle.__class__ = _GatewayResponseCycle
            if self.scope["method"] != "HEAD":
                cycle.transport = _HeadWithBody(self.transport, cycle)

    def on_message_complete(self) -> None:
        self._completed_in_chunk = True
        self._head = None
        super().on_message_complete()

    def _idle(self) -> bool:
        """No response is being written (nothing would be lost by handing the connection over)."""
        return (self.cycle is None or self.cycle.response_complete) and not self.pipeline

    def _hand_to_h11(self, received: bytes) -> None:
        """The connection goes on behind h11, from the first byte of the refused request."""
        protocol = H11Protocol(
            config=self.config,
            server_state=self.server_state,
            app_state=self.app_state,
            _loop=self.loop,
        )
        self.connections.discard(self)
        transport: asyncio.Transport = self.transport
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(received)


class _HeadWithBody:
    """The transport as one request's response cycle sees it: the first write once the response
    has started (uvicorn's head) is held and written together with the next one (the body, or its
    first chunk), so that an answer is one write; everything else is the transport's own. A held
    head is written before the transport is closed (an app that started its answer and failed:
    the client gets the head, as it did), and dropped with the connection if it is lost first."""

    __slots__ = ("_cycle", "_held", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        self._transport = transport
        # The cycle until its head is written (held), then None: the cycle holds this transport,
        # so holding the cycle longer would make the two a reference cycle that only the garbage
        # collector frees. Every answered request left one (about 15 objects with its scope and
        # headers): the gateway's young collections came every ~60 requests at c=32, each a
        # pause of ~6 CPU-ms for everything in flight (issue 13); now reference counting frees
        # each request's objects when its answer is done.
        self._cycle: RequestResponseCycle | None = cycle
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif self._cycle is not None and self._cycle.response_started:
            self._cycle = None
            self._held = data
        else:  # before the response (100 Continue), or the rest of a streamed body
            self._transport.write(data)

    def close(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


# A head's header lines as uvicorn writes them (`name: value\r\n` each), matched whole: a name of
# any bytes but those uvicorn's HEADER_RE refuses and upper-case letters (uvicorn lowers names; one
# already lower is written as it is), a value of any bytes but those its HEADER_VALUE_RE refuses.
# Neither may hold CR or LF, and a name no colon or space: with one CR LF per header in the block
# (checked apart), its lines are its headers, each split at its name's end.
_HEADER_BLOCK = re.compile(
    b'(?:[^\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"A-Z]*: [^\x00-\x08\x0a-\x1f\x7f]*\r\n)*'
)
# The headers uvicorn acts on while writing a head, in the order they come (a line starts a header).
_FRAMING = re.compile(b"^(content-length|transfer-encoding|connection): ([^\r]*)\r$", re.MULTILINE)


class _GatewayResponseCycle(RequestResponseCycle):
    """uvicorn's response cycle, writing a valid head with one check for all its headers (see
    the module's docstring); everything else, and any head that is not plainly valid, is
    uvicorn's `send` as it is."""

    async def send(self, message: Any) -> None:
        if (
            self.response_started
            or message["type"] != "http.response.start"
            or self.access_log
            or self.flow.write_paused
            or self.disconnected
        ):
            await super().send(message)
            return
        headers = message.get("headers", ())
        block = None
        # (Another iterable would be consumed here and gone for uvicorn's way: it goes there.)
        if isinstance(headers, list | tuple):
            try:
                lines = [b"%s: %s\r\n" % header for header in (*self.default_headers, *headers)]
            except TypeError:  # (a header not of bytes, or not a pair: uvicorn's error)
                lines = None
            if lines is not None:
                block = b"".join(lines)
                # One CR LF per header: none inside a name or value (a value "1\r\nx: 2" would
                # otherwise read as two valid lines).
                if block.count(b"\r\n") != len(lines) or _HEADER_BLOCK.fullmatch(block) is None:
                    block = None
        if block is None:
            await super().send(message)
            return
        # From here exactly uvicorn's RequestResponseCycle.send for the start of a response.
        self.response_started = True
        self.waiting_for_100_continue = False
        status_code = message["status"]
        content = [STATUS_LINE[status_code], block]
        has_connection_close = self._framing(block)
        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
        if (
            self.chunked_encoding is None
            and self.scope["method"] != "HEAD"
            and status_code not in (204, 304)
        ):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        self.transport.write(b"".join(content))

    def _framing(self, block: bytes) -> bool:
        """What uvicorn's header loop sets from the framing headers, in their order; whether one
        asked to close the connection."""
        has_connection_close = False
        for name, value in _FRAMING.findall(block):
            if name == b"content-length" and self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
            elif name == b"connection":
                connection = [token.lower().strip() for token in value.split(b",")]
                if b"close" in connection:
                    self.keep_alive = False
                    has_connection_close = True
        return has_connection_close
