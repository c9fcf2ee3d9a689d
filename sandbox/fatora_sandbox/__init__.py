"""An offline Fatora-compatible (test mode) sandbox for Hirepay (`python -m fatora_sandbox`)."""

from fatora_sandbox.app import create_app
from fatora_sandbox.config import FatoraConfig, load_config

__all__ = ["FatoraConfig", "create_app", "load_config"]
