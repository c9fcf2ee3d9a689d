"""One sandbox's shared machinery in one place: the state lock, clock, faults, background
tasks, webhook dispatcher and idempotency keys."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter
from starlette.requests import Request

from sandbox_kit.background import Background
from sandbox_kit.clock import Clock
from sandbox_kit.config import KitConfig
from sandbox_kit.faults import ErrorRenderer, Fault, FaultRegistry, fault_adapter
from sandbox_kit.idempotency import IdempotencyCache
from sandbox_kit.webhooks import Delivery, Endpoint, Router, Signer, WebhookDispatcher


@dataclass
class Kit:
    """Everything provider-neutral a sandbox process holds; every state change happens while
    holding `lock`."""

    config: KitConfig
    lock: asyncio.Lock
    clock: Clock
    faults: FaultRegistry
    background: Background
    webhooks: WebhookDispatcher
    idempotency: IdempotencyCache
    render_error: ErrorRenderer
    fault_specs: TypeAdapter[Any]
    # Run (under the lock) on reset and after the clock moves; providers forget or expire state.
    on_reset: list[Callable[[], None]] = field(default_factory=list)
    on_clock: list[Callable[[], None]] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        config: KitConfig,
        *,
        signer: Signer,
        render_error: ErrorRenderer,
        extra_faults: tuple[type[Fault], ...] = (),
        router: Router | None = None,
        on_settled: Callable[[Delivery], None] | None = None,
        idempotency_ttl: float = 24 * 3600,
    ) -> Kit:
        lock = asyncio.Lock()
        faults = FaultRegistry()
        background = Background(lock)
        webhooks = WebhookDispatcher(
            config.webhooks, faults, background, signer, router=router, on_settled=on_settled
        )
        return cls(
            config=config,
            lock=lock,
            clock=Clock(),
            faults=faults,
            background=background,
            webhooks=webhooks,
            idempotency=IdempotencyCache(idempotency_ttl),
            render_error=render_error,
            fault_specs=fault_adapter(*extra_faults),
        )

    def register_configured_endpoints(self, secret: str, **extra: Any) -> list[Endpoint]:
        """Endpoints for the configured URLs, subscribed to every event, signed with `secret`."""
        return [
            self.webhooks.register(
                Endpoint(url=url, secret=secret, source="config", extra=dict(extra))
            )
            for url in self.config.webhook_urls
        ]

    def base_url(self, request: Request) -> str:
        """Where links to the sandbox's own pages point."""
        if self.config.public_url:
            return self.config.public_url
        host = request.headers.get("host") or f"{self.config.host}:{self.config.port}"
        return f"{request.url.scheme}://{host}"

    async def reset(self) -> None:
        """Forget state, deliveries, keys, faults and admin-registered endpoints; stop background
        work. The caller must not hold the lock (background changes wait on it)."""
        await self.background.cancel_all()
        async with self.lock:
            self.webhooks.reset()
            self.idempotency.reset()
            self.faults.clear()
            self.clock.reset()
            for hook in self.on_reset:
                hook()

    async def shutdown(self) -> None:
        await self.background.cancel_all()
        await self.webhooks.close()
