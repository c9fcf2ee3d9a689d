"""Fixtures of the jobs gRPC tests: one stack of real participants shared by the session."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from hirepay.jobs.v1 import jobs_service_pb2_grpc as pb_grpc
from hirepay.payments.v1 import payments_service_pb2_grpc as ppb_grpc
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from hirepay_dev.sandbox_client import SandboxAdmin
from hirepay_dev.services import WALLET, start_service
from tests.support.jobs_stack import WEBHOOK_SECRET, Stack, start_jobs
from tests.support.service_auth import signed_channel
from tests.support.startup import start_together
from tests.support.stripe_stack import start_payments, start_stripe_sandbox
from tests.support.webhook_relay import WebhookRelay

PROVIDER_TIMEOUT = 1.5


@pytest.fixture(scope="session")
def stack(make_service_database: Callable[[str], str]) -> Iterator[Stack]:
    # Every process is registered for stopping as soon as it starts, so a failed start-up of a
    # later one leaves nothing running.
    with contextlib.ExitStack() as cleanup:
        relay = WebhookRelay().start()
        cleanup.callback(relay.stop)
        # The sandbox and the wallet do not depend on each other: started side by side, while
        # the payments database is made.
        (sandbox, sandbox_url), wallet, payments_db = start_together(
            cleanup,
            (
                lambda: start_stripe_sandbox("jobs-tests-sandbox", relay.url, WEBHOOK_SECRET),
                lambda started: started[0].stop(),
            ),
            (
                lambda: start_service(
                    WALLET, make_service_database("wallet"), log_name="jobs-tests-wallet"
                ),
                lambda started: started.stop(),
            ),
            (lambda: make_service_database("payments"), lambda _url: None),
        )
        payments = start_payments(
            payments_db,
            sandbox_url,
            api_key="sk_test_jobstests",
            webhook_secrets=WEBHOOK_SECRET,
            provider_timeout=PROVIDER_TIMEOUT,
            log_name="jobs-tests-payments",
            # Every captured fee and refund is booked on the ledger through provider clearing.
            PAYMENTS_WALLET_TARGET=wallet.target,
        )
        cleanup.callback(payments.stop)
        relay.target = payments.target
        admin = SandboxAdmin(sandbox_url)
        cleanup.callback(admin.close)
        pch = cleanup.enter_context(
            signed_channel(payments.target, caller="jobs", service="payments")
        )
        wch = cleanup.enter_context(signed_channel(wallet.target, caller="jobs", service="wallet"))
        yield Stack(
            sandbox,
            admin,
            payments,
            wallet,
            ppb_grpc.PaymentsServiceStub(pch),
            wpb_grpc.WalletServiceStub(wch),
        )


@pytest.fixture(scope="session")
def jobs(
    stack: Stack, make_service_database: Callable[[str], str]
) -> Iterator[pb_grpc.JobsServiceStub]:
    service = start_jobs(stack, make_service_database("jobs"))
    channel = signed_channel(service.target, caller="gateway", service="jobs")
    yield pb_grpc.JobsServiceStub(channel)
    channel.close()
    service.stop()


@pytest.fixture(autouse=True)
def _no_faults_left(request: pytest.FixtureRequest) -> Iterator[None]:
    if "stack" not in request.fixturenames:
        yield
        return
    stack: Stack = request.getfixturevalue("stack")
    stack.admin.clear_faults()
    yield
    stack.admin.clear_faults()
