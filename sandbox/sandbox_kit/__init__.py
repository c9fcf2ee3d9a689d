"""Provider-neutral machinery for Hirepay's offline payment-provider sandboxes: faults on demand,
signed webhook delivery, idempotency keys, the `/_sandbox/` admin API and app scaffolding."""

from sandbox_kit.config import KitConfig
from sandbox_kit.runtime import Kit

__all__ = ["Kit", "KitConfig"]
