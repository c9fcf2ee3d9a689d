"""Sandbox settings from the command line, falling back to `<PREFIX>_*` environment variables;
each provider adds its own flags."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sandbox_kit.webhooks import WebhookSettings


@dataclass(frozen=True)
class KitConfig:
    """How a sandbox listens and where and how it sends webhooks."""

    host: str = "127.0.0.1"
    port: int = 0
    public_url: str | None = None  # base of hosted-page links; default: the request's host
    webhook_urls: tuple[str, ...] = ()
    webhook_secret: str | None = None  # signs deliveries to the configured URLs
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    log_level: str = "info"


def float_or_none(value: str | None, default: float | None) -> float | None:
    """A number of seconds; blank means the default, `never`/`off`/`none` means None."""
    if value is None or value.strip() == "":
        return default
    if value.strip().lower() in {"never", "off", "none"}:
        return None
    return float(value)


def load_config(
    prog: str,
    env_prefix: str,
    default_port: int,
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    default_max_attempts: int = 25,
    add_arguments: Callable[[argparse.ArgumentParser, Mapping[str, str]], None] | None = None,
) -> tuple[KitConfig, argparse.Namespace]:
    """Parse `python -m <prog>` flags; each defaults to `<env_prefix>_<NAME>` in the environment.

    Returns the common settings and the parsed namespace (for the provider's own flags).
    """
    env = os.environ if env is None else env

    def var(name: str, default: str | None = None) -> str | None:
        return env.get(f"{env_prefix}_{name}", default)

    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=f"Offline {prog}.")
    parser.add_argument("--host", default=var("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(var("PORT") or default_port))
    parser.add_argument("--public-url", default=var("PUBLIC_URL"))
    parser.add_argument(
        "--webhook-url",
        action="append",
        default=None,
        help=f"webhook URL (repeatable or comma-separated); env {env_prefix}_WEBHOOK_URL",
    )
    parser.add_argument("--webhook-secret", default=var("WEBHOOK_SECRET"))
    parser.add_argument("--webhook-retry-base", default=var("WEBHOOK_RETRY_BASE"))
    parser.add_argument("--webhook-retry-max-delay", default=var("WEBHOOK_RETRY_MAX_DELAY"))
    parser.add_argument("--webhook-max-attempts", default=var("WEBHOOK_MAX_ATTEMPTS"))
    parser.add_argument("--webhook-timeout", default=var("WEBHOOK_TIMEOUT"))
    parser.add_argument("--webhook-concurrency", default=var("WEBHOOK_CONCURRENCY"))
    parser.add_argument("--log-level", default=var("LOG_LEVEL", "info"))
    if add_arguments is not None:
        add_arguments(parser, env)
    args = parser.parse_args(argv)

    raw_urls = args.webhook_url or [var("WEBHOOK_URL", "") or ""]
    urls = tuple(u.strip() for raw in raw_urls for u in raw.split(",") if u.strip())
    base = WebhookSettings(max_attempts=default_max_attempts)
    webhooks = WebhookSettings(
        retry_base=float_or_none(args.webhook_retry_base, base.retry_base) or 0.0,
        retry_max_delay=float_or_none(args.webhook_retry_max_delay, base.retry_max_delay) or 0.0,
        max_attempts=int(args.webhook_max_attempts or base.max_attempts),
        timeout=float_or_none(args.webhook_timeout, base.timeout) or base.timeout,
        max_concurrency=int(args.webhook_concurrency or base.max_concurrency),
    )
    config = KitConfig(
        host=args.host,
        port=args.port,
        public_url=(args.public_url or "").rstrip("/") or None,
        webhook_urls=urls,
        webhook_secret=args.webhook_secret or None,
        webhooks=webhooks,
        log_level=args.log_level,
    )
    return config, args
