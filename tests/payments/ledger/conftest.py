"""A payments service wired to a real wallet process and to two providers' sandboxes (Stripe with
its webhooks relayed, Fatora settled by the buyer's return), for the ledger bookings tests: every
captured payment and refund on the wallet, coin purchases and direct job payments."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest

from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay_dev.procs import Process
from hirepay_dev.provider_sandboxes import FATORA_API_KEY, start_provider_sandbox
from hirepay_dev.sandbox_client import SandboxAdmin
from hirepay_dev.services import WALLET, RunningService, start_service
from tests.support.fatora_support import WEBHOOK_SECRET as FATORA_WEBHOOK_SECRET
from tests.support.payments_helpers import WEBHOOK_SECRET
from tests.support.service_auth import signed_aio_channel
from tests.support.stripe_stack import start_payments, start_stripe_sandbox
from tests.support.webhook_relay import WebhookRelay

COIN_RATES = "USD:100,KWD:100"
JOB_PAYMENT_FEE_BPS = 1000


@dataclass
class LedgerStack:
    payments: RunningService
    payments_db: str
    wallet: RunningService
    admin: SandboxAdmin
    fatora_url: str
    sandbox_url: str = ""  # the Stripe sandbox's API, for refunds made at its "dashboard"


@pytest.fixture(scope="module")
def ledger_stack(make_service_database: Callable[[str], str]) -> Iterator[LedgerStack]:
    yield from ledger_stack_with(make_service_database)


def ledger_stack_with(
    make_service_database: Callable[[str], str], **payments_env: str
) -> Iterator[LedgerStack]:
    """The stack, its payments process with `payments_env` besides the stack's own settings (a
    test module's `ledger_stack` of its own)."""
    relay = WebhookRelay().start()
    sandbox, sandbox_url = start_stripe_sandbox("ledger-sandbox", relay.url, WEBHOOK_SECRET)
    fatora: Process
    fatora, fatora_url = start_provider_sandbox(
        "fatora_sandbox",
        name="ledger-fatora",
        env={"FATORA_SANDBOX_WEBHOOK_SECRET": FATORA_WEBHOOK_SECRET},
    )
    wallet = start_service(WALLET, make_service_database("wallet"), log_name="ledger-wallet")
    payments_db = make_service_database("payments")
    payments = start_payments(
        payments_db,
        sandbox_url,
        api_key="sk_test_ledgertests",
        webhook_secrets=WEBHOOK_SECRET,
        provider_timeout=2.0,
        log_name="ledger-payments",
        PAYMENTS_WALLET_TARGET=wallet.target,
        PAYMENTS_GRANT_INTERVAL_SECONDS="0.1",
        PAYMENTS_WATCH_INTERVAL_SECONDS="0.2",
        PAYMENTS_WATCH_MAX_INTERVAL_SECONDS="1",
        PAYMENTS_COIN_RATES=COIN_RATES,
        PAYMENTS_JOB_PAYMENT_FEE_BPS=str(JOB_PAYMENT_FEE_BPS),
        PAYMENTS_FATORA_API_KEY=FATORA_API_KEY,
        PAYMENTS_FATORA_API_BASE=fatora_url,
        PAYMENTS_FATORA_WEBHOOK_SECRET=FATORA_WEBHOOK_SECRET,
        **payments_env,
    )
    relay.target = payments.target
    admin = SandboxAdmin(sandbox_url)
    try:
        yield LedgerStack(payments, payments_db, wallet, admin, fatora_url, sandbox_url)
    finally:
        admin.close()
        relay.target = ""
        payments.stop()
        wallet.stop()
        fatora.stop()
        sandbox.stop()
        relay.stop()


@pytest.fixture(scope="module")
async def jobs_stub(ledger_stack: LedgerStack) -> AsyncIterator[pb_grpc.PaymentsServiceStub]:
    """Payments as the jobs service calls it (the saga, direct job payments, the auditor)."""
    channel = signed_aio_channel(ledger_stack.payments.target, caller="jobs", service="payments")
    yield pb_grpc.PaymentsServiceStub(channel)
    await channel.close()


@pytest.fixture(autouse=True)
def _no_faults_left(ledger_stack: LedgerStack) -> Iterator[None]:
    """Each test starts and ends without armed sandbox faults."""
    ledger_stack.admin.clear_faults()
    yield
    ledger_stack.admin.clear_faults()
