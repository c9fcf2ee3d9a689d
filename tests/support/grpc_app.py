"""A platform GrpcApp served in the test's event loop, as a service process serves it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from hirepay_dev.procs import ensure_service_token_secret, free_port
from hirepay_platform.server import GrpcApp
from hirepay_platform.settings import ServiceSettings


def app_settings() -> ServiceSettings:
    """Settings of a test app: free ports, no database, a second's grace, the dev secret."""
    return ServiceSettings(
        grpc_port=free_port(),
        metrics_port=free_port(),
        database_url="postgresql://unused",
        shutdown_grace_seconds=1,
        HIREPAY_SERVICE_TOKEN_SECRET=ensure_service_token_secret(),
    )


@asynccontextmanager
async def serving(app: GrpcApp) -> AsyncIterator[str]:
    """`app` serving (GrpcApp.serve in a task) until the block ends: its target."""
    stop = asyncio.Event()
    task = asyncio.create_task(app.serve(stop))
    for _ in range(250):  # (the port is known once the server has started)
        if app.port:
            break
        await asyncio.sleep(0.02)
    try:
        yield f"127.0.0.1:{app.port}"
    finally:
        stop.set()
        await task
