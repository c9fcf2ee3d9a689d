"""Operations: business metrics on /metrics (OPS-1), no secret in the logs (SEC-4), and signed
settlement callbacks to a subsystem's URL (API-5) from a second, independently configured replica."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay_dev.pg import libpq_url
from hirepay_dev.services import PAYMENTS, RunningService, start_service
from tests.support.callback_receiver import CallbackReceiver
from tests.support.payments_helpers import (
    WEBHOOK_SECRET,
    authorize_request,
    branch,
    rpc_error,
)
from tests.support.service_auth import signed_aio_channel
from tests.support.waiting import wait_for

CALLBACK_SECRET = "callback-secret-for-tests"


async def test_business_metrics_are_exported(stub, payments_service, unique) -> None:
    gtx = unique("gtx")
    await stub.Authorize(authorize_request(gtx, amount=1111, currency="EUR"))
    await stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
    await rpc_error(
        stub.Authorize(authorize_request(unique("gtx"), token="pm_card_chargeDeclined"))
    )
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{payments_service.metrics_port}/metrics")).text
    assert 'hirepay_payment_revenue_minor_total{currency="EUR"}' in text
    assert (
        'hirepay_payment_attempts_total{method="CARD",outcome="failed",reason="PAYMENT_DECLINED"}'
        in text
    )
    assert (
        'hirepay_provider_call_duration_seconds_count{operation="authorize",outcome="ok"}' in text
    )
    for name in (
        "hirepay_webhook_events_total",
        "hirepay_webhook_lag_seconds",
        "hirepay_payments_outbox_backlog",
        "hirepay_payment_refunds_total",
    ):
        assert name in text


def _gauge(text: str, name: str) -> float:
    """A label-less gauge's value in a /metrics page."""
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, name
    return float(match.group(1))


async def test_the_running_service_samples_the_settlement_horizon(
    payments_service, make_database
) -> None:
    """The poller samples the stream's horizon (payments 0020): a transaction holding an xid in
    another database of the server shows in the gauge while it runs, and leaves it once ended."""
    name = "hirepay_payment_settlement_horizon_age_seconds"
    url = f"http://127.0.0.1:{payments_service.metrics_port}/metrics"
    other = await asyncpg.connect(libpq_url(await asyncio.to_thread(make_database, "horizon")))
    try:
        async with httpx.AsyncClient() as http:

            async def age() -> float:
                return _gauge((await http.get(url)).text, name)

            await other.execute("BEGIN")
            await other.fetchval("SELECT pg_current_xact_id()")
            await wait_for(lambda: _above(age, 2.0), timeout=60)
            await other.execute("COMMIT")
            await wait_for(lambda: _below(age, 2.0), timeout=60)
    finally:
        await other.close()


async def _above(value, bound: float) -> bool:
    return await value() > bound


async def _below(value, bound: float) -> bool:
    return await value() < bound


def test_no_secret_reaches_the_logs(payments_service) -> None:
    log = payments_service.process.log_path.read_text(errors="replace")
    assert log, "the service logged nothing"
    for secret in (WEBHOOK_SECRET, "sk_test_paymentstests", "4242424242424242"):
        assert secret not in log


@pytest.fixture(scope="module")
def callback_replica(
    make_service_database, sandbox_url, tmp_path_factory
) -> Iterator[tuple[RunningService, CallbackReceiver]]:
    receiver = CallbackReceiver(CALLBACK_SECRET, fail_first=2, path="/payments/events")
    plans = tmp_path_factory.mktemp("plans") / "plans.json"
    plans.write_text(
        json.dumps(
            [
                {"code": "YEARLY", "user_type": "COMPANY", "name": "Company Premium (yearly)",
                 "prices": {"USD": 30000, "JPY": 4500000}, "period_days": 365},
                {"code": "MONTHLY", "user_type": "APPLICANT", "prices": {"EUR": 900}, "period_days": 30},
            ]
        )
    )  # fmt: skip
    service = start_service(
        PAYMENTS,
        make_service_database("payments"),
        env={
            "PAYMENTS_STRIPE_API_BASE": sandbox_url,
            "PAYMENTS_STRIPE_API_KEY": "sk_test_paymentstests",
            "PAYMENTS_STRIPE_WEBHOOK_SECRETS": WEBHOOK_SECRET,
            "PAYMENTS_PROVIDER_TIMEOUT_SECONDS": "2",
            "PAYMENTS_CALLBACK_URLS": f"jobs={receiver.url}",
            "PAYMENTS_CALLBACK_SECRET": CALLBACK_SECRET,
            "PAYMENTS_PLANS_FILE": str(plans),
        },
        log_name="payments-callbacks",
    )
    yield service, receiver
    service.stop()
    receiver.close()


async def test_settlement_callbacks_are_signed_and_retried(callback_replica, unique) -> None:
    service, receiver = callback_replica
    async with signed_aio_channel(service.target, caller="jobs", service="payments") as channel:
        stub = pb_grpc.PaymentsServiceStub(channel)
        gtx = unique("gtx")
        await stub.Authorize(authorize_request(gtx, amount=1700))
        await stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))

        async def both():
            mine = [b for b, _ in receiver.received if b["payment"]["branch"]["globalTxId"] == gtx]
            return mine if len(mine) >= 2 else None

        mine = await wait_for(both, timeout=20)
    assert [b["type"] for b in mine[:2]] == ["payment.authorized", "payment.captured"]
    assert mine[1]["payment"]["capturedMinor"] == "1700"
    assert all(ok for _, ok in receiver.received)
    assert len({b["eventId"] for b in mine}) == 2


async def test_plans_file_replaces_the_default_plans(callback_replica) -> None:
    service, _ = callback_replica
    async with signed_aio_channel(service.target, caller="jobs", service="payments") as channel:
        stub = pb_grpc.PaymentsServiceStub(channel)
        plans = (await stub.ListPlans(pb.ListPlansRequest(user_type=pb.USER_TYPE_COMPANY))).plans
        assert [(p.code, p.period_days) for p in plans] == [("YEARLY", 365)]
        assert {(m.currency, m.amount_minor) for m in plans[0].prices} == {
            ("USD", 30000),
            ("JPY", 4500000),
        }
        txn = (
            await stub.Subscribe(
                pb.SubscribeRequest(
                    request_id="y1",
                    user_type=pb.USER_TYPE_COMPANY,
                    user_id="company-yearly",
                    email="a@b.example",
                    plan="YEARLY",
                    payment_method="STRIPE",
                    currency="JPY",
                    return_url="https://app.example/ok",
                    cancel_url="https://app.example/cancel",
                )
            )
        ).transaction
        assert (txn.amount.amount_minor, txn.amount.currency) == (4500000, "JPY")
