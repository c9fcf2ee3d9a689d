"""Fatora sandbox settings: the common ones (`FATORA_SANDBOX_*`) plus the merchant API key."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sandbox_kit.config import KitConfig
from sandbox_kit.config import load_config as load_kit_config

ENV_PREFIX = "FATORA_SANDBOX"
DEFAULT_PORT = 12114
DEFAULT_API_KEY = "E4B73FEE-F492-4607-A38D-852B0EBC91C9"  # Fatora's public test key
DEFAULT_WEBHOOK_SECRET = "fatora-sandbox-webhook-secret"


@dataclass(frozen=True)
class FatoraConfig:
    """The kit's settings plus the one merchant API key the sandbox accepts."""

    kit: KitConfig
    api_key: str = DEFAULT_API_KEY


def _add_arguments(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    parser.add_argument("--api-key", default=env.get(f"{ENV_PREFIX}_API_KEY", DEFAULT_API_KEY))


def load_config(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> FatoraConfig:
    """Parse `python -m fatora_sandbox` flags; each defaults to `FATORA_SANDBOX_<NAME>`."""
    kit, args = load_kit_config(
        "fatora_sandbox",
        ENV_PREFIX,
        DEFAULT_PORT,
        argv,
        env,
        default_max_attempts=10,
        add_arguments=_add_arguments,
    )
    if kit.webhook_secret is None:
        kit = KitConfig(**{**kit.__dict__, "webhook_secret": DEFAULT_WEBHOOK_SECRET})
    return FatoraConfig(kit=kit, api_key=args.api_key)
