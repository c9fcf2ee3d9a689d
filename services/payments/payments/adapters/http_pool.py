"""The HTTP transport of the provider clients (Stripe's SDK, Fatora): many calls in flight at once
to a slow provider without the connection pool's bookkeeping growing with them (issue 13).

httpcore's pool (httpx's transport) walks every connection it holds twice per request (when the
request joins the pool and when its response is closed), probing each idle one for expiry with a
`poll()` of its socket, and counts the idle ones again for each idle one it meets: the cost of a
call grows with the connections held, and a pool holds as many as calls were ever in flight at
once. With 300 ms on every provider call and 128 postings, the payments process held about a
hundred connections and spent some 15% of its CPU in that bookkeeping (2% at zero latency), on
the one event loop that serves all of its calls; upstream knows it (encode/httpcore#1035, fixed
only in a fork).

So the connections are split among small pools of `POOL_SIZE`, and each call goes to the one with
the fewest calls in flight (the first such, so a quiet process keeps using one warm pool): each
pool still holds every connection its calls need, all of them kept alive, and the calls in flight
at once are capped by `max_connections` over all the pools, as with one pool.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable

import httpx

# Connections per pool: what each request's bookkeeping walks through (twice). Small, so that it
# costs about what one pool of a few connections costs; more pools cost one `min` per call.
POOL_SIZE = 8


class _Released(httpx.AsyncByteStream):
    """A response body that tells its pool's count when it is closed (the connection is then
    free again; httpx closes every response it reads in full)."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class SpreadTransport(httpx.AsyncBaseTransport):
    """httpx's transport as small pools; a call goes to the least busy (see the module)."""

    def __init__(
        self,
        *,
        max_connections: int,
        verify: ssl.SSLContext | bool = True,
        pool_size: int = POOL_SIZE,
    ) -> None:
        if max_connections < 1 or pool_size < 1:
            raise ValueError("max_connections and pool_size must be at least 1")
        # Pool sizes add up to max_connections exactly: the cap on calls in flight is unchanged.
        sizes = [pool_size] * (max_connections // pool_size)
        if max_connections % pool_size:
            sizes.append(max_connections % pool_size)
        self._pools = [
            httpx.AsyncHTTPTransport(
                verify=verify,
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            )
            for size in sizes
        ]
        self._busy = [0] * len(sizes)
        self._sizes = sizes

    @property
    def in_flight(self) -> list[int]:
        """Calls in flight in each pool (until their response is closed)."""
        return list(self._busy)

    def _pick(self) -> int:
        """The first pool with the fewest calls in flight against its size (one that has room
        while any has)."""
        busy, sizes = self._busy, self._sizes
        return min(range(len(busy)), key=lambda i: (busy[i] >= sizes[i], busy[i]))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = self._pick()
        self._busy[index] += 1

        def release() -> None:
            self._busy[index] -= 1

        try:
            response = await self._pools[index].handle_async_request(request)
        except BaseException:
            release()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Released(response.stream, release)
        return response

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()
