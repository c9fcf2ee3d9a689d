"""Razorpay sandbox settings: the common ones (`RAZORPAY_SANDBOX_*`) plus the test API key pair
and how long an uncaptured payment waits before it is refunded automatically."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sandbox_kit.config import KitConfig, float_or_none
from sandbox_kit.config import load_config as load_kit_config

ENV_PREFIX = "RAZORPAY_SANDBOX"
DEFAULT_PORT = 12113
DEFAULT_KEY_ID = "rzp_test_hirepaysandbox"
DEFAULT_KEY_SECRET = "hirepay-sandbox-key-secret"
DEFAULT_WEBHOOK_SECRET = "razorpay-sandbox-webhook-secret"
# Razorpay refunds payments left authorized but uncaptured (5 days by default).
DEFAULT_AUTO_REFUND_AFTER = 5 * 24 * 3600.0


@dataclass(frozen=True)
class RazorpayConfig:
    """The kit's settings plus the one test key pair the sandbox accepts."""

    kit: KitConfig
    key_id: str = DEFAULT_KEY_ID
    key_secret: str = DEFAULT_KEY_SECRET
    auto_refund_after: float | None = DEFAULT_AUTO_REFUND_AFTER
    account_id: str = "acc_HirepaySandbox1"


def _add_arguments(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    parser.add_argument("--key-id", default=env.get(f"{ENV_PREFIX}_KEY_ID", DEFAULT_KEY_ID))
    parser.add_argument(
        "--key-secret", default=env.get(f"{ENV_PREFIX}_KEY_SECRET", DEFAULT_KEY_SECRET)
    )
    parser.add_argument("--auto-refund-after", default=env.get(f"{ENV_PREFIX}_AUTO_REFUND_AFTER"))


def load_config(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> RazorpayConfig:
    """Parse `python -m razorpay_sandbox` flags; each defaults to `RAZORPAY_SANDBOX_<NAME>`."""
    kit, args = load_kit_config(
        "razorpay_sandbox",
        ENV_PREFIX,
        DEFAULT_PORT,
        argv,
        env,
        default_max_attempts=25,
        add_arguments=_add_arguments,
    )
    if not str(args.key_id).startswith("rzp_test_"):
        raise SystemExit("RAZORPAY_SANDBOX_KEY_ID must be a test key (rzp_test_...)")
    if kit.webhook_secret is None:
        kit = KitConfig(**{**kit.__dict__, "webhook_secret": DEFAULT_WEBHOOK_SECRET})
    return RazorpayConfig(
        kit=kit,
        key_id=args.key_id,
        key_secret=args.key_secret,
        auto_refund_after=float_or_none(args.auto_refund_after, DEFAULT_AUTO_REFUND_AFTER),
    )
