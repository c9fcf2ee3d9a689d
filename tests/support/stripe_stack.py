"""Start-up of the Stripe side of a test stack: the sandbox process wired to a webhook URL, and
the payments service pointed at it, with the fast timings tests use."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay_dev.procs import Process
from hirepay_dev.sandbox_client import start_sandbox
from hirepay_dev.services import PAYMENTS, RunningService, start_service
from tests.support.payments_helpers import WEBHOOK_SECRET
from tests.support.service_auth import signed_aio_channel


def start_stripe_sandbox(
    name: str,
    webhook_url: str,
    webhook_secret: str,
    *,
    retry_base: float = 0.2,
    retry_max_delay: float = 1.0,
    max_attempts: int = 30,
    port: int | None = None,
    **env: str,
) -> tuple[Process, str]:
    """The sandbox as a real process delivering its webhooks to `webhook_url`; (process, URL).

    `port` chosen up front lets the payments service be started beside it, pointed at its URL."""
    return start_sandbox(
        name=name,
        port=port,
        env={
            "SANDBOX_WEBHOOK_URL": webhook_url,
            "SANDBOX_WEBHOOK_SECRET": webhook_secret,
            "SANDBOX_WEBHOOK_RETRY_BASE": str(retry_base),
            "SANDBOX_WEBHOOK_RETRY_MAX_DELAY": str(retry_max_delay),
            "SANDBOX_WEBHOOK_MAX_ATTEMPTS": str(max_attempts),
            **env,
        },
    )


def payments_env(
    sandbox_url: str, api_key: str, webhook_secrets: str, provider_timeout: float
) -> dict[str, str]:
    """The payments service's settings for a sandbox, polling fast."""
    return {
        "PAYMENTS_STRIPE_API_BASE": sandbox_url,
        "PAYMENTS_STRIPE_API_KEY": api_key,
        "PAYMENTS_STRIPE_WEBHOOK_SECRETS": webhook_secrets,
        "PAYMENTS_PROVIDER_TIMEOUT_SECONDS": str(provider_timeout),
        "PAYMENTS_POLL_INTERVAL_SECONDS": "0.2",
        "PAYMENTS_POLL_MAX_INTERVAL_SECONDS": "0.5",
    }


def start_payments(
    database_url: str,
    sandbox_url: str,
    *,
    api_key: str,
    webhook_secrets: str,
    provider_timeout: float,
    log_name: str,
    **env: str,
) -> RunningService:
    """The payments service as a real process against the sandbox at `sandbox_url`."""
    return start_service(
        PAYMENTS,
        database_url,
        env={**payments_env(sandbox_url, api_key, webhook_secrets, provider_timeout), **env},
        log_name=log_name,
    )


def start_reconciling_payments(
    database_url: str, sandbox_url: str, *, api_key: str, log_name: str, **env: str
) -> RunningService:
    """A payments process of a reconciliation test's own (its most recently changed payments are
    the test's), on the sandbox's webhook secret, with a 2 s provider timeout and no wallet."""
    return start_payments(
        database_url,
        sandbox_url,
        api_key=api_key,
        webhook_secrets=WEBHOOK_SECRET,
        provider_timeout=2.0,
        log_name=log_name,
        PAYMENTS_WALLET_TARGET="",
        **env,
    )


@contextlib.asynccontextmanager
async def payments_stub_as_jobs(
    service: RunningService,
) -> AsyncIterator[pb_grpc.PaymentsServiceStub]:
    """A stub of `service`'s PaymentsService calling as the jobs service."""
    async with signed_aio_channel(service.target, caller="jobs", service="payments") as channel:
        yield pb_grpc.PaymentsServiceStub(channel)
