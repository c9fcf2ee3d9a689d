"""The registry of providers (issue 8): a payment is captured and refunded through the provider that
made it, also after a restart with another default provider; a provider without credentials is
not offered (PROVIDER_NOT_AVAILABLE), never a crash."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import httpx
import pytest

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay_dev.provider_sandboxes import (
    PAYPAL_CLIENT_ID,
    PAYPAL_CLIENT_SECRET,
    start_provider_sandbox,
)
from hirepay_dev.services import PAYMENTS, RunningService, start_service
from tests.support.payments_helpers import authorize_request, branch, rpc_error
from tests.support.service_auth import signed_aio_channel

CHECKOUT = pb.PAYMENT_METHOD_TYPE_CHECKOUT
State = pb.Payment.State


@pytest.fixture(scope="module")
def paypal_url() -> Iterator[str]:
    process, url = start_provider_sandbox("paypal_sandbox", name="registry-paypal")
    yield url
    process.stop()


@pytest.fixture(scope="module")
def start_payments(
    make_service_database: Callable[[str], str], sandbox_url: str, paypal_url: str
) -> Iterator[Callable[..., RunningService]]:
    """Start payments on one database with a chosen default provider (and PayPal or not)."""
    database = make_service_database("payments")
    running: list[RunningService] = []

    def start(default: str, *, paypal: bool = True) -> RunningService:
        for service in running:
            service.stop()
        env = {
            "PAYMENTS_DEFAULT_PROVIDER": default,
            "PAYMENTS_STRIPE_API_BASE": sandbox_url,
            "PAYMENTS_STRIPE_API_KEY": "sk_test_registry",
            "PAYMENTS_PROVIDER_TIMEOUT_SECONDS": "5",
        }
        if paypal:
            env |= {
                "PAYMENTS_PAYPAL_CLIENT_ID": PAYPAL_CLIENT_ID,
                "PAYMENTS_PAYPAL_CLIENT_SECRET": PAYPAL_CLIENT_SECRET,
                "PAYMENTS_PAYPAL_API_BASE": paypal_url,
            }
        service = start_service(
            PAYMENTS, database, env=env, log_name=f"payments-registry-{default}"
        )
        running.append(service)
        return service

    yield start
    for service in running:
        service.stop()


async def _paypal_captured(stub: pb_grpc.PaymentsServiceStub, paypal_url: str, gtx: str) -> str:
    """A PayPal checkout (the default provider) approved by the buyer, then captured."""
    started = await stub.Authorize(
        authorize_request(gtx, method=CHECKOUT, token="", return_url="https://app.example/back")
    )
    payment = started.payment
    assert payment.provider == "paypal" and payment.state == State.REQUIRES_ACTION
    order = payment.next_action_url.rsplit("token=", 1)[-1]
    async with httpx.AsyncClient() as http:
        approved = await http.post(
            f"{paypal_url}/_sandbox/orders/{order}/approve", json={"funding": "balance"}
        )
    assert approved.status_code == 200, approved.text
    back = await stub.ConfirmCheckoutReturn(
        pb.ConfirmCheckoutReturnRequest(provider="paypal", params={"token": order})
    )
    assert back.payment.state == State.AUTHORIZED
    captured = await stub.Capture(pb.CaptureRequest(request_id=f"c-{gtx}", branch=branch(gtx)))
    assert captured.payment.state == State.CAPTURED
    return order


async def test_a_payment_is_refunded_through_its_provider_after_the_default_changed(
    start_payments: Callable[..., RunningService], paypal_url: str, unique
) -> None:
    gtx = unique("gtx")
    first = start_payments("paypal")
    async with signed_aio_channel(first.target, caller="jobs", service="payments") as channel:
        order = await _paypal_captured(pb_grpc.PaymentsServiceStub(channel), paypal_url, gtx)

    # A restart with Stripe as the default: the PayPal payment still goes to PayPal.
    second = start_payments("stripe")
    async with signed_aio_channel(second.target, caller="jobs", service="payments") as channel:
        stub = pb_grpc.PaymentsServiceStub(channel)
        stored = (
            await stub.GetPaymentByBranch(pb.GetPaymentByBranchRequest(branch=branch(gtx)))
        ).payment
        refund = await stub.Refund(
            pb.RefundRequest(request_id=f"r-{gtx}", payment_id=stored.payment_id, amount_minor=1000)
        )
        assert refund.refund.status == "SUCCEEDED"
        assert refund.payment.provider == "paypal" and refund.payment.refunded_minor == 1000
        new = await stub.Authorize(authorize_request(unique("gtx")))
        assert new.payment.provider == "stripe"  # new payments take the new default
    async with httpx.AsyncClient() as http:
        token = (
            await http.post(
                f"{paypal_url}/v1/oauth2/token",
                auth=(PAYPAL_CLIENT_ID, PAYPAL_CLIENT_SECRET),
                data={"grant_type": "client_credentials"},
            )
        ).json()["access_token"]
        seen = (
            await http.get(
                f"{paypal_url}/v2/checkout/orders/{order}",
                headers={"Authorization": f"Bearer {token}"},
            )
        ).json()
    capture = seen["purchase_units"][0]["payments"]["captures"][0]
    assert capture["status"] == "PARTIALLY_REFUNDED"


async def test_a_provider_without_credentials_is_not_offered(
    start_payments: Callable[..., RunningService], unique
) -> None:
    service = start_payments("stripe", paypal=False)
    async with signed_aio_channel(service.target, caller="jobs", service="payments") as channel:
        stub = pb_grpc.PaymentsServiceStub(channel)
        gtx = unique("gtx")
        exc = await rpc_error(
            stub.Authorize(
                authorize_request(
                    gtx,
                    method=CHECKOUT,
                    token="",
                    return_url="https://a.example",
                    provider="paypal",
                )
            )
        )
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "paypal" in (exc.details() or "")
        missing = await rpc_error(
            stub.GetPaymentByBranch(pb.GetPaymentByBranchRequest(branch=branch(gtx)))
        )
        assert missing.code() == grpc.StatusCode.NOT_FOUND
        # The service still works with what it has.
        assert (await stub.Authorize(authorize_request(unique("gtx")))).payment.provider == "stripe"
