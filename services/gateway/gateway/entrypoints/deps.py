"""FastAPI dependencies shared by the routers: the backends, the limiter, body reading."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.adapters.backends import Backends
from gateway.adapters.ratelimit import TokenBucketLimiter
from gateway.api.errors import ApiError


def get_backends(request: Request) -> Backends:
    return request.app.state.backends


def get_limiter(request: Request) -> TokenBucketLimiter:
    return request.app.state.limiter


BackendsDep = Annotated[Backends, Depends(get_backends)]
LimiterDep = Annotated[TokenBucketLimiter, Depends(get_limiter)]


async def read_raw_body(request: Request, limit: int) -> bytes:
    """The request body exactly as received, refusing more than `limit` bytes (413)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "PAYLOAD_TOO_LARGE", "The request body is too large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "PAYLOAD_TOO_LARGE", "The request body is too large")
        chunks.append(chunk)
    return b"".join(chunks)
