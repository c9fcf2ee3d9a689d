"""The sandbox ASGI application: `/v1/` API, hosted pages and `/_sandbox/` admin, wrapped in
the fault middleware."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.types import ASGIApp

from sandbox_kit.faults import FaultMiddleware
from stripe_sandbox import admin, api, hosted
from stripe_sandbox.config import SandboxConfig
from stripe_sandbox.faults import render_error
from stripe_sandbox.resources import checkout, connect
from stripe_sandbox.runtime import Sandbox

log = logging.getLogger("stripe_sandbox")

EXPIRY_SWEEP_SECONDS = 1.0


async def _expire_sessions(sb: Sandbox) -> None:
    """Expire Checkout Sessions past `expires_at` even when nobody looks at them."""
    while True:
        await asyncio.sleep(EXPIRY_SWEEP_SECONDS)
        async with sb.store.lock:
            checkout.expire_due(sb)


def create_app(config: SandboxConfig) -> ASGIApp:
    """Build the application for `config`; state lives in `app.state.sandbox`."""
    sandbox = Sandbox.create(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(_expire_sessions(sandbox), name="expire sessions")
        saver = None
        if sandbox.state_file is not None:
            saver = asyncio.create_task(
                sandbox.state_file.run(sandbox.store, sandbox.idempotency), name="save state"
            )
        if connect.resume_payouts(sandbox):
            log.info("payouts on their way before the restart will settle")
        for url in config.webhook_urls:
            log.info("webhooks for every event go to %s", url)
        try:
            yield
        finally:
            for task in (sweeper, saver):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await sandbox.shutdown()

    app = Starlette(routes=[*api.routes(), *hosted.routes(), *admin.routes()], lifespan=lifespan)
    app.state.sandbox = sandbox
    app.state.kit = admin.AdminView(sandbox)  # what the kit's admin routes read
    return FaultMiddleware(app, sandbox.faults, render_error, ("/v1/",))
