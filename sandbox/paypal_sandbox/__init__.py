"""An offline PayPal-compatible (REST Orders v2 / Payments v2) sandbox for Hirepay
(`python -m paypal_sandbox`)."""

from paypal_sandbox.app import create_app
from paypal_sandbox.config import PayPalConfig, load_config

__all__ = ["PayPalConfig", "create_app", "load_config"]
