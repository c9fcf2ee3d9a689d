"""A TCP proxy in front of the test PostgreSQL that a test can cut and restore: a database outage
injected from outside the service, with no hook in production code."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from hirepay_dev.procs import free_port


class PostgresProxy:
    """Forwards 127.0.0.1:<port> to the server of `url` (TCP or a Unix socket) on its own thread."""

    def __init__(self, url: str) -> None:
        self._target = urlsplit(url)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def url_for(self, url: str) -> str:
        """`url` (a database on the same server) rewritten to go through the proxy."""
        parts = urlsplit(url)
        query = {k: v for k, v in parse_qs(parts.query).items() if k != "host"}
        user = parts.username or "postgres"
        password = f":{parts.password}" if parts.password else ""
        netloc = f"{user}{password}@127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, doseq=True)))

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        parts = self._target
        socket_dir = parse_qs(parts.query).get("host", [""])[0] or (
            parts.hostname if parts.hostname and parts.hostname.startswith("/") else ""
        )
        if socket_dir:
            return await asyncio.open_unix_connection(f"{socket_dir}/.s.PGSQL.{parts.port or 5432}")
        return await asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 5432)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await self._open_upstream()
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    def _run(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    def start(self) -> PostgresProxy:
        self._thread.start()
        self._run(self._listen())
        return self

    def cut(self) -> None:
        """The database becomes unreachable: live connections drop, new ones are refused."""
        self._run(self._cut())

    def restore(self) -> None:
        """The database is reachable again on the same address."""
        self._run(self._listen())

    def close(self) -> None:
        self._run(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
