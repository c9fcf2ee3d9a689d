"""The running sandbox: configuration, state, faults, webhooks and idempotency in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sandbox_kit.background import Background
from sandbox_kit.idempotency import IdempotencyCache
from sandbox_kit.webhooks import WebhookDispatcher
from stripe_sandbox import ids
from stripe_sandbox.config import SandboxConfig
from stripe_sandbox.faults import StripeFaults
from stripe_sandbox.persistence import ChangeCountingLock, StateFile
from stripe_sandbox.resources.webhook_endpoints import register_configured
from stripe_sandbox.store import Store
from stripe_sandbox.webhooks import create_dispatcher


@dataclass
class Sandbox:
    """Everything one sandbox process holds; built at start-up, inside the event loop."""

    config: SandboxConfig
    store: Store
    faults: StripeFaults
    background: Background
    webhooks: WebhookDispatcher
    idempotency: IdempotencyCache
    webhook_secret: str  # signs deliveries to the configured URLs; stable across resets
    state_file: StateFile | None = None

    @classmethod
    def create(cls, config: SandboxConfig) -> Sandbox:
        store = Store(lock=ChangeCountingLock())
        faults = StripeFaults()
        background = Background(store.lock)
        webhooks = create_dispatcher(config, store, faults, background)
        secret = config.webhook_secret or ids.new_id("whsec")
        idempotency = IdempotencyCache()
        state = StateFile(Path(config.state_file)) if config.state_file else None
        sandbox = cls(config, store, faults, background, webhooks, idempotency, secret, state)
        if state is not None and state.load(store, idempotency):
            # Configured endpoints follow this start's configuration, not the saved one.
            for endpoint in list(store.all("webhook_endpoint")):
                if store.meta(endpoint["id"]).get("source") == "config":
                    del store.objects["webhook_endpoint"][endpoint["id"]]
        register_configured(sandbox)
        return sandbox

    async def reset(self) -> None:
        """Forget all objects, events, deliveries, keys and faults; stop background work.

        The caller must not hold the store lock (background changes wait on it).
        """
        await self.background.cancel_all()
        async with self.store.lock:
            self.store.reset()
            self.webhooks.reset()
            self.idempotency.reset()
            self.faults.clear()
            register_configured(self)

    async def shutdown(self) -> None:
        await self.background.cancel_all()
        await self.webhooks.close()
