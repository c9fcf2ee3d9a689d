"""The delivery client (httptools' parser) against the client it replaced (httpx on h11), answer
by answer (rev17e): for each way an endpoint may answer, well or badly, the same status or the
same error class, computed from httpx itself. Found so: a 101 switch nobody asked for escaped as
httptools' own exception (the delivery then stayed pending, never retried), a 100 Continue and
then closing was taken as status 100, and a second answer in the same read gave its status.
And the request line and Host a URL gives are httpx's (a non-ASCII path was refused, an IPv6
Host sent unbracketed), a URL it cannot deliver to a failed attempt.

Known and left: llhttp is stricter than h11 on framing no server here sends (bare LF line ends,
a Content-Length given twice, Content-Length beside chunked): a RemoteProtocolError, retried."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from sandbox_kit.http_client import WebhookHttpClient

CLOSE = b"<close>"  # an answer ending so is sent, then the connection closed by the server

ANSWERS = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n" + CLOSE,
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc" + CLOSE,
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n\r\nuntil the end" + CLOSE,
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 20" + CLOSE,
    b"HTTP/1.1 200 OK\r\n\r\nuntil the end" + CLOSE,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab" + CLOSE,
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 500 X\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 500 X\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\ngarbage",
    b"HTTP/1.1 20 Short\r\nContent-Length: 0\r\n\r\n",
    b"http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc" + CLOSE,
    b"HTTP/1.1 200 OK\r\nNoColon\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n Folded: x\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 0\r\n\r\n",
]


@asynccontextmanager
async def _endpoint(answer: bytes) -> AsyncIterator[str]:
    """A server reading one request and answering `answer`; then it closes (an answer ending in
    CLOSE) or waits for the client to close."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        writer.write(answer.removesuffix(CLOSE))
        await writer.drain()
        if not answer.endswith(CLOSE):
            await reader.read()  # (until the client closes)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hooks"
    finally:
        server.close()


async def _ours(answer: bytes) -> int | str:
    client = WebhookHttpClient(max_idle=1)
    async with _endpoint(answer) as url:
        try:
            return await client.post(url, b"{}", {"Stripe-Signature": "t=1"}, 2)
        except httpx.HTTPError as error:
            return type(error).__name__
        finally:
            await client.aclose()


async def _h11(answer: bytes) -> int | str:
    async with _endpoint(answer) as url, httpx.AsyncClient() as client:
        try:
            response = await client.post(
                url, content=b"{}", headers={"Stripe-Signature": "t=1"}, timeout=2
            )
            return response.status_code
        except httpx.HTTPError as error:
            return type(error).__name__


@pytest.mark.parametrize("answer", ANSWERS)
async def test_an_answer_is_read_as_h11_read_it(answer: bytes) -> None:
    assert await _ours(answer) == await _h11(answer)


async def test_after_a_second_answer_in_one_read_the_connection_is_not_reused() -> None:
    accepted: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        while await reader.readuntil(b"\r\n\r\n"):
            await reader.readexactly(2)
            extra = b"HTTP/1.1 500 X\r\nContent-Length: 0\r\n\r\n" if len(accepted) == 1 else b""
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" + extra)
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hooks"
    client = WebhookHttpClient(max_idle=1)
    try:
        assert [await client.post(url, b"{}", {}, 2) for _ in range(2)] == [200, 200]
        assert len(accepted) == 2
    finally:
        await client.aclose()
        server.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_a_delivery_targets_its_url_as_httpx_did(host: str) -> None:
    """The request line and Host of a delivery are httpx's for the same URL: the path and query
    percent-encoded, dot segments resolved, an IPv6 host bracketed (were sent raw: refused as
    not ASCII, or a Host of `::1:port`)."""
    heads: list[list[bytes]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        heads.append(head.split(b"\r\n")[:2])
        await reader.readexactly(2)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    try:
        server = await asyncio.start_server(serve, host, 0)
    except OSError:
        pytest.skip(f"cannot listen on {host}")
    netloc = f"[{host}]" if ":" in host else host
    try:
        for path in ["/hooks", "/hooks/é x?a=b c&d=[]|", "/a/./b/../c?q=%zz"]:
            url = f"http://{netloc}:{server.sockets[0].getsockname()[1]}{path}"
            client = WebhookHttpClient(max_idle=1)
            assert await client.post(url, b"{}", {}, 2) == 200
            await client.aclose()
            async with httpx.AsyncClient() as reference:
                assert (await reference.post(url, content=b"{}")).status_code == 200
            assert heads[-2] == heads[-1], path
    finally:
        server.close()


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:99999/", "http://h:abc/", "http://h/\x01", "ftp://h/", "http:///x"]
)
async def test_a_url_that_cannot_be_delivered_to_is_a_failed_attempt(url: str) -> None:
    """An HTTPError (the attempt recorded, retried, given up), never another exception that
    escapes the dispatcher's handling and leaves the delivery pending."""
    client = WebhookHttpClient(max_idle=1)
    with pytest.raises(httpx.UnsupportedProtocol):
        await client.post(url, b"{}", {}, 1)
