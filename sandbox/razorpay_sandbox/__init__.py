"""An offline Razorpay-compatible (test mode) sandbox for Hirepay (`python -m razorpay_sandbox`)."""

from razorpay_sandbox.app import create_app
from razorpay_sandbox.config import RazorpayConfig, load_config

__all__ = ["RazorpayConfig", "create_app", "load_config"]
