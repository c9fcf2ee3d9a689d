"""sandbox_kit.http_client on httptools' parser: the bytes a delivery sends, and each way an
endpoint may answer (a length, chunks, a body ended by closing, an informational answer first,
a cut-short body, garbage, nothing) read as the client read them with h11, connections kept
only when both sides may keep them; a header that would smuggle a line in is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from sandbox_kit.http_client import WebhookHttpClient


@asynccontextmanager
async def _endpoint(*answers: bytes | None) -> AsyncIterator[tuple[str, list[bytes], list[int]]]:
    """A server answering each request with the next of `answers` (None: close without one;
    an answer ending in b"<close>" is sent without it, then the connection closed); the URL,
    the requests it read and the connections it accepted (their count)."""
    pending = list(answers)
    requests: list[bytes] = []
    accepted: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        while pending:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            requests.append(head + await reader.readexactly(length))
            answer = pending.pop(0)
            if answer is None:
                break
            if answer.endswith(b"<close>"):
                writer.write(answer.removesuffix(b"<close>"))
                await writer.drain()
                break
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hooks?x=1", requests, accepted
    finally:
        server.close()


async def _post(client: WebhookHttpClient, url: str) -> int | str:
    try:
        return await client.post(url, b'{"id": "evt_1"}', {"Stripe-Signature": "t=1,v1=ab"}, 2)
    except httpx.HTTPError as error:
        return type(error).__name__


async def test_a_delivery_is_one_post_with_its_headers_and_connections_are_kept() -> None:
    async with _endpoint(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    ) as (url, requests, accepted):
        client = WebhookHttpClient(max_idle=2)
        assert [await _post(client, url) for _ in range(3)] == [200, 500, 204]
        await client.aclose()
    assert len(accepted) == 1  # one connection, kept between the three
    host = url.split("/")[2]
    assert requests[0] == (
        b"POST /hooks?x=1 HTTP/1.1\r\nHost: %s\r\nContent-Length: 15\r\n"
        b'Stripe-Signature: t=1,v1=ab\r\n\r\n{"id": "evt_1"}' % host.encode()
    )


async def test_answers_ended_by_closing_cut_short_or_unreadable() -> None:
    cases: list[tuple[bytes | None, int | str]] = [
        (b"HTTP/1.0 202 Accepted\r\n\r\nuntil the end<close>", 202),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 200),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc<close>", "RemoteProtocolError"),
        (b"HTTP/1.1 200 OK\r\nContent-Le<close>", "RemoteProtocolError"),
        (b"nonsense\r\n\r\n", "RemoteProtocolError"),
        (None, "RemoteProtocolError"),
    ]
    for answer, expected in cases:
        async with _endpoint(answer, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n") as (
            url,
            _,
            accepted,
        ):
            client = WebhookHttpClient(max_idle=2)
            assert await _post(client, url) == expected, answer
            # The connection was not kept: the next delivery opens a new one.
            assert await _post(client, url) == 201
            assert len(accepted) == 2
            await client.aclose()


@pytest.mark.parametrize("value", ["a\r\nX-Smuggled: 1", "a\nb", "café"])
async def test_a_header_with_a_line_break_or_not_ascii_is_refused(value: str) -> None:
    client = WebhookHttpClient(max_idle=1)
    with pytest.raises(httpx.LocalProtocolError):
        await client.post("http://127.0.0.1:9/hooks", b"{}", {"X-Value": value}, 1)
