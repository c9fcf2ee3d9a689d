"""PayPal sandbox settings: the common ones (`PAYPAL_SANDBOX_*`) plus the REST app's
credentials and the webhook id deliveries are signed for."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sandbox_kit.config import KitConfig
from sandbox_kit.config import load_config as load_kit_config

ENV_PREFIX = "PAYPAL_SANDBOX"
DEFAULT_PORT = 12112
DEFAULT_CLIENT_ID = "hirepay-sandbox-client-id"
DEFAULT_CLIENT_SECRET = "hirepay-sandbox-client-secret"
DEFAULT_WEBHOOK_ID = "8PT597110X687430LKGECATA"
DEFAULT_WEBHOOK_SECRET = "paypal-sandbox-webhook-secret"


@dataclass(frozen=True)
class PayPalConfig:
    """The kit's settings plus the one REST app the sandbox knows."""

    kit: KitConfig
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    webhook_id: str = (
        DEFAULT_WEBHOOK_ID  # id of the configured webhook (PAYPAL_SANDBOX_WEBHOOK_URL)
    )
    token_ttl: int = 32400  # seconds an access token lives, as PayPal's sandbox answers


def _add_arguments(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    parser.add_argument(
        "--client-id", default=env.get(f"{ENV_PREFIX}_CLIENT_ID", DEFAULT_CLIENT_ID)
    )
    parser.add_argument(
        "--client-secret", default=env.get(f"{ENV_PREFIX}_CLIENT_SECRET", DEFAULT_CLIENT_SECRET)
    )
    parser.add_argument(
        "--webhook-id", default=env.get(f"{ENV_PREFIX}_WEBHOOK_ID", DEFAULT_WEBHOOK_ID)
    )
    parser.add_argument("--token-ttl", default=env.get(f"{ENV_PREFIX}_TOKEN_TTL", "32400"))


def load_config(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> PayPalConfig:
    """Parse `python -m paypal_sandbox` flags; each defaults to `PAYPAL_SANDBOX_<NAME>`."""
    kit, args = load_kit_config(
        "paypal_sandbox",
        ENV_PREFIX,
        DEFAULT_PORT,
        argv,
        env,
        default_max_attempts=25,  # PayPal retries a delivery up to 25 times over 3 days
        add_arguments=_add_arguments,
    )
    if kit.webhook_secret is None:
        kit = KitConfig(**{**kit.__dict__, "webhook_secret": DEFAULT_WEBHOOK_SECRET})
    return PayPalConfig(
        kit=kit,
        client_id=args.client_id,
        client_secret=args.client_secret,
        webhook_id=args.webhook_id,
        token_ttl=int(args.token_ttl),
    )
