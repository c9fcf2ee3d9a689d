"""An offline, Stripe-compatible test-mode sandbox for Hirepay (`python -m stripe_sandbox`)."""

from stripe_sandbox.app import create_app
from stripe_sandbox.config import SandboxConfig, load_config

__all__ = ["SandboxConfig", "create_app", "load_config"]
