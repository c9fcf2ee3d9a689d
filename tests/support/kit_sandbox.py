"""A kit sandbox (PayPal, Razorpay, Fatora) as its own tests start it: a real process whose
webhooks go to the tests' receiver, signed with the tests' secret, and retried fast (50 ms, at
most 200 ms apart) so that a test of the retries does not wait for real-world delays."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from hirepay_dev.provider_sandboxes import start_provider_sandbox
from tests.support.webhook_receiver import ProviderReceiver


@contextlib.contextmanager
def sandbox_for_tests(
    module: str, receiver: ProviderReceiver, secret: str, max_attempts: int, **env: str
) -> Iterator[str]:
    """The sandbox `module` (e.g. "paypal_sandbox") running, its URL; `env`: more of its own
    settings, without the `<MODULE>_` prefix (e.g. WEBHOOK_ID)."""
    prefix = module.upper()
    settings = {
        "WEBHOOK_URL": receiver.url,
        "WEBHOOK_SECRET": secret,
        "WEBHOOK_RETRY_BASE": "0.05",
        "WEBHOOK_RETRY_MAX_DELAY": "0.2",
        "WEBHOOK_MAX_ATTEMPTS": str(max_attempts),
        **env,
    }
    process, url = start_provider_sandbox(
        module,
        name=f"{module.replace('_', '-')}-tests",
        env={f"{prefix}_{name}": value for name, value in settings.items()},
    )
    try:
        yield url
    finally:
        process.stop()
