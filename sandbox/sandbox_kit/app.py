"""App scaffolding shared by the sandboxes: the Starlette app wrapped in the fault middleware,
periodic sweeps, and `serve` for `python -m <provider>_sandbox`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from sandbox_kit import admin
from sandbox_kit.config import KitConfig
from sandbox_kit.faults import FaultMiddleware
from sandbox_kit.runtime import Kit

log = logging.getLogger("sandbox_kit")


async def _sweep(kit: Kit, every: float, sweep: Callable[[], None]) -> None:
    while True:
        await asyncio.sleep(every)
        async with kit.lock:
            sweep()


def build_app(
    kit: Kit,
    sandbox: Any,
    routes: Sequence[BaseRoute],
    *,
    admin_routes: Sequence[tuple[str, str, admin.Handler]] = (),
    api_prefixes: Sequence[str] = ("/v1/",),
    sweeps: Sequence[tuple[float, Callable[[], None]]] = (),
) -> ASGIApp:
    """The provider's routes and the admin API, faults applied to `api_prefixes`.

    `app.state.kit` holds the kit, `app.state.sandbox` the provider's state; each sweep runs
    under the lock every so many seconds (expiries nobody asks about).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(_sweep(kit, every, sweep)) for every, sweep in sweeps]
        for url in kit.config.webhook_urls:
            log.info("webhooks for every event go to %s", url)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await kit.shutdown()

    app = Starlette(routes=[*routes, *admin.routes(admin_routes)], lifespan=lifespan)
    app.state.kit = kit
    app.state.sandbox = sandbox
    return FaultMiddleware(app, kit.faults, kit.render_error, api_prefixes)


def serve(app: ASGIApp, config: KitConfig) -> None:
    """Serve with uvicorn on httptools (the C parser; its request cycle holds the transport the
    `down` faults abort)."""
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # deliveries are logged by webhooks.py
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        http="httptools",
        log_level=config.log_level,
        timeout_graceful_shutdown=1,
    )
