"""PayPal-Request-Id idempotency and the faults on demand, seen through the official SDK:
latency, 5xx, dropped connections, timeouts and answers lost after the operation took effect."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import requests
from apimatic_core.exceptions.auth_validation_exception import AuthValidationException
from paypalserversdk.exceptions.error_exception import ErrorException
from paypalserversdk.models.money import Money
from paypalserversdk.models.refund_request import RefundRequest
from paypalserversdk.paypal_serversdk_client import PaypalServersdkClient

from hirepay_dev.provider_sandboxes import KitAdmin, paypal_client
from tests.support.paypal_support import approved_order, order_request


def _request_id() -> str:
    return str(uuid.uuid4())


def test_request_id_replays_the_first_order(paypal: PaypalServersdkClient) -> None:
    key = _request_id()
    body = order_request("21.00")
    first = paypal.orders.create_order({"body": body, "paypal_request_id": key})
    again = paypal.orders.create_order({"body": body, "paypal_request_id": key})
    assert first.status_code == 201
    assert again.status_code == 200  # PayPal answers an idempotent replay 200 OK
    assert again.body.id == first.body.id
    with pytest.raises(ErrorException) as other:
        paypal.orders.create_order({"body": order_request("22.00"), "paypal_request_id": key})
    assert other.value.response_code == 422
    assert other.value.details[0].issue == "DUPLICATE_REQUEST_ID"


def test_request_id_makes_a_refund_happen_once(paypal: PaypalServersdkClient) -> None:
    order = approved_order(paypal, "30.00")
    capture = (
        paypal.orders.capture_order({"id": order.id}).body.purchase_units[0].payments.captures[0]
    )
    key = _request_id()
    options = {
        "capture_id": capture.id,
        "body": RefundRequest(amount=Money(currency_code="USD", value="10.00")),
        "paypal_request_id": key,
    }
    first = paypal.payments.refund_captured_payment(dict(options)).body
    second = paypal.payments.refund_captured_payment(dict(options)).body
    assert first.id == second.id
    full = paypal.orders.get_order({"id": order.id}).body
    assert len(full.purchase_units[0].payments.refunds) == 1
    assert (
        paypal.payments.get_captured_payment({"capture_id": capture.id}).body.status
        == "PARTIALLY_REFUNDED"
    )


def test_latency_fault_slows_matching_calls(
    paypal: PaypalServersdkClient, paypal_admin: KitAdmin
) -> None:
    """At least the injected delay for the faulted call (a lower bound: load only adds); the
    fault fired once and is spent (the sandbox's record); the next call answers within the delay
    it would have waited, a gap a loaded machine does not close."""
    paypal.orders.create_order({"body": order_request("1.00")})  # token fetched beforehand
    paypal_admin.add_fault("latency", ms=2_000, count=1, path_prefix="/v2/checkout/orders")
    started = time.monotonic()
    paypal.orders.create_order({"body": order_request("1.00")})
    assert time.monotonic() - started >= 2.0
    assert paypal_admin.faults() == []
    started = time.monotonic()
    paypal.orders.create_order({"body": order_request("1.00")})
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("status", [500, 503])
def test_error_fault_answers_paypal_shaped_5xx(
    paypal: PaypalServersdkClient, paypal_admin: KitAdmin, status: int
) -> None:
    order = approved_order(paypal, "33.00")
    paypal_admin.add_fault(
        "error", status=status, count=1, method="POST", path_prefix="/v2/checkout/orders/*/capture"
    )
    with pytest.raises(ErrorException) as raised:
        paypal.orders.capture_order({"id": order.id})
    assert raised.value.response_code == status
    assert raised.value.name in ("INTERNAL_SERVER_ERROR", "SERVICE_UNAVAILABLE")
    assert raised.value.debug_id
    assert paypal.orders.get_order({"id": order.id}).body.status == "APPROVED"  # nothing happened
    assert paypal.orders.capture_order({"id": order.id}).body.status == "COMPLETED"


def test_down_fault_drops_the_connection(
    paypal: PaypalServersdkClient, paypal_admin: KitAdmin
) -> None:
    order = approved_order(paypal, "34.00")
    paypal_admin.add_fault("down", count=1, path_prefix="/v2/checkout/orders/*/capture")
    with pytest.raises(requests.exceptions.ConnectionError):
        paypal.orders.capture_order({"id": order.id})
    assert paypal.orders.get_order({"id": order.id}).body.status == "APPROVED"


def test_lost_answer_after_capture_is_recovered_with_the_same_request_id(
    paypal: PaypalServersdkClient, paypal_admin: KitAdmin
) -> None:
    order = approved_order(paypal, "35.00")
    paypal_admin.add_fault(
        "down_after_commit", count=1, path_prefix="/v2/checkout/orders/*/capture"
    )
    key = _request_id()
    with pytest.raises(requests.exceptions.ConnectionError):
        paypal.orders.capture_order({"id": order.id, "paypal_request_id": key})
    seen = paypal.orders.get_order({"id": order.id}).body
    assert seen.status == "COMPLETED"  # the capture happened; only its answer was lost
    retried = paypal.orders.capture_order({"id": order.id, "paypal_request_id": key})
    assert retried.status_code == 200
    assert (
        retried.body.purchase_units[0].payments.captures[0].id
        == seen.purchase_units[0].payments.captures[0].id
    )
    assert (
        len(paypal.orders.get_order({"id": order.id}).body.purchase_units[0].payments.captures) == 1
    )


def test_error_after_commit_on_refund(
    paypal: PaypalServersdkClient, paypal_admin: KitAdmin
) -> None:
    order = approved_order(paypal, "36.00")
    capture = (
        paypal.orders.capture_order({"id": order.id}).body.purchase_units[0].payments.captures[0]
    )
    paypal_admin.add_fault(
        "error_after_commit", status=502, count=1, path_prefix="/v2/payments/captures"
    )
    key = _request_id()
    with pytest.raises(ErrorException) as raised:
        paypal.payments.refund_captured_payment(
            {"capture_id": capture.id, "paypal_request_id": key}
        )
    assert raised.value.response_code == 502
    assert (
        paypal.payments.get_captured_payment({"capture_id": capture.id}).body.status == "REFUNDED"
    )
    replay = paypal.payments.refund_captured_payment(
        {"capture_id": capture.id, "paypal_request_id": key}
    )
    assert replay.body.status == "COMPLETED"


def test_timeout_fault_client_gives_up_and_nothing_happens(
    paypal_url: str, paypal: PaypalServersdkClient, paypal_admin: KitAdmin
) -> None:
    impatient = paypal_client(paypal_url, timeout=1)
    order = approved_order(paypal, "37.00")
    impatient.orders.get_order({"id": order.id})  # token fetched before the fault
    paypal_admin.add_fault(
        "timeout", seconds=5, count=1, path_prefix="/v2/checkout/orders/*/capture"
    )
    started = time.monotonic()
    with pytest.raises(requests.exceptions.Timeout):
        impatient.orders.capture_order({"id": order.id})
    assert time.monotonic() - started < 3
    time.sleep(0.2)
    assert paypal.orders.get_order({"id": order.id}).body.status == "APPROVED"


def test_faults_on_the_token_endpoint(paypal_url: str, paypal_admin: KitAdmin) -> None:
    paypal_admin.add_fault("error", status=503, count=1, path_prefix="/v1/oauth2/token")
    fresh = paypal_client(paypal_url)
    # The SDK swallows the token endpoint's error and reports that it has no token.
    with pytest.raises(AuthValidationException):
        fresh.orders.create_order({"body": order_request("1.00")})
    assert fresh.orders.create_order({"body": order_request("1.00")}).status_code == 201


def test_admin_refuses_bad_faults(paypal_admin: KitAdmin) -> None:
    for bad in ({"kind": "nope"}, {"kind": "error", "status": 418}, {"kind": "latency"}):
        with pytest.raises(httpx.HTTPStatusError) as raised:
            paypal_admin.add_fault(**bad)
        assert raised.value.response.status_code == 400
