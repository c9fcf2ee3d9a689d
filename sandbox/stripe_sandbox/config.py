"""Sandbox settings from the command line, falling back to `SANDBOX_*` environment variables."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SandboxConfig:
    """How the sandbox listens, where it sends webhooks, and how fast things settle."""

    host: str = "127.0.0.1"
    port: int = 12111
    public_url: str | None = None  # base of checkout/3DS page links; default: the request's host
    webhook_urls: tuple[str, ...] = ()
    # The events the configured URLs receive (globs), as a Dashboard endpoint's "events to send".
    webhook_events: tuple[str, ...] = ("*",)
    webhook_secret: str | None = None  # fixed whsec_ for the configured URLs; random when unset
    webhook_retry_base: float = 0.5  # first retry delay, doubled each attempt
    webhook_retry_max_delay: float = 3600.0
    # With the default delays (0.5 s doubling, capped at an hour), 85 attempts span about three
    # days, as Stripe retries in live mode; tests shorten the delays instead.
    webhook_max_attempts: int = 85
    webhook_timeout: float = 10.0  # per delivery attempt
    # Deliveries in flight at once (the worker pool and its HTTP connections); the rest wait.
    webhook_concurrency: int = 8
    settle_after: float | None = None  # auto-settle bank debits after N seconds; None: admin only
    payout_settle_after: float | None = 0.5  # pay out after N seconds; None: admin only
    # A refund of a charge paid with the refund-failure test card (4000 0000 0000 5126,
    # pm_card_refundFail) succeeds, then fails after N seconds; None: only by the admin API.
    refund_fail_after: float | None = 1.0
    # Connect accounts: "instant" (usable at once) or "hosted" (express/standard accounts need
    # their account link's page first, as at Stripe).
    connect_onboarding: str = "instant"
    log_level: str = "info"
    # Where the state is kept across restarts (JSON, rewritten after changes); None: memory only.
    state_file: str | None = None


def _float(value: str | None, default: float | None) -> float | None:
    if value is None or value.strip() == "":
        return default
    if value.strip().lower() in {"never", "off", "none"}:
        return None
    return float(value)


def load_config(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> SandboxConfig:
    """Parse `python -m stripe_sandbox` flags; each flag defaults to its environment variable."""
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="python -m stripe_sandbox", description="Offline Stripe-compatible sandbox."
    )
    parser.add_argument("--host", default=env.get("SANDBOX_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env.get("SANDBOX_PORT", "12111")))
    parser.add_argument("--public-url", default=env.get("SANDBOX_PUBLIC_URL"))
    parser.add_argument(
        "--webhook-url",
        action="append",
        default=None,
        help="webhook URL (repeatable or comma-separated); env SANDBOX_WEBHOOK_URL",
    )
    parser.add_argument("--webhook-secret", default=env.get("SANDBOX_WEBHOOK_SECRET"))
    parser.add_argument(
        "--webhook-events",
        default=env.get("SANDBOX_WEBHOOK_EVENTS", "*"),
        help="event types the webhook URLs receive (comma-separated globs); env "
        "SANDBOX_WEBHOOK_EVENTS; default every event",
    )
    parser.add_argument("--webhook-retry-base", default=env.get("SANDBOX_WEBHOOK_RETRY_BASE"))
    parser.add_argument(
        "--webhook-retry-max-delay", default=env.get("SANDBOX_WEBHOOK_RETRY_MAX_DELAY")
    )
    parser.add_argument("--webhook-max-attempts", default=env.get("SANDBOX_WEBHOOK_MAX_ATTEMPTS"))
    parser.add_argument("--webhook-timeout", default=env.get("SANDBOX_WEBHOOK_TIMEOUT"))
    parser.add_argument(
        "--webhook-concurrency", type=int, default=env.get("SANDBOX_WEBHOOK_CONCURRENCY")
    )
    parser.add_argument("--settle-after", default=env.get("SANDBOX_SETTLE_AFTER"))
    parser.add_argument("--payout-settle-after", default=env.get("SANDBOX_PAYOUT_SETTLE_AFTER"))
    parser.add_argument("--refund-fail-after", default=env.get("SANDBOX_REFUND_FAIL_AFTER"))
    parser.add_argument(
        "--connect-onboarding",
        choices=("instant", "hosted"),
        default=env.get("SANDBOX_CONNECT_ONBOARDING") or "instant",
    )
    parser.add_argument("--log-level", default=env.get("SANDBOX_LOG_LEVEL", "info"))
    parser.add_argument("--state-file", default=env.get("SANDBOX_STATE_FILE"))
    args = parser.parse_args(argv)

    raw_urls = args.webhook_url or [env.get("SANDBOX_WEBHOOK_URL", "")]
    urls = tuple(u.strip() for raw in raw_urls for u in raw.split(",") if u.strip())
    defaults = SandboxConfig()
    secret = args.webhook_secret or None
    if secret is not None and not secret.startswith("whsec_"):
        parser.error("SANDBOX_WEBHOOK_SECRET must start with whsec_")
    return SandboxConfig(
        host=args.host,
        port=args.port,
        public_url=(args.public_url or "").rstrip("/") or None,
        webhook_urls=urls,
        webhook_events=tuple(e.strip() for e in args.webhook_events.split(",") if e.strip())
        or ("*",),
        webhook_secret=secret,
        webhook_retry_base=_float(args.webhook_retry_base, defaults.webhook_retry_base) or 0.0,
        webhook_retry_max_delay=_float(
            args.webhook_retry_max_delay, defaults.webhook_retry_max_delay
        )
        or 0.0,
        webhook_max_attempts=int(args.webhook_max_attempts or defaults.webhook_max_attempts),
        webhook_timeout=_float(args.webhook_timeout, defaults.webhook_timeout)
        or defaults.webhook_timeout,
        webhook_concurrency=max(1, int(args.webhook_concurrency or defaults.webhook_concurrency)),
        settle_after=_float(args.settle_after, None),
        payout_settle_after=_float(args.payout_settle_after, defaults.payout_settle_after),
        refund_fail_after=_float(args.refund_fail_after, defaults.refund_fail_after),
        connect_onboarding=args.connect_onboarding,
        log_level=args.log_level,
        state_file=args.state_file or None,
    )
