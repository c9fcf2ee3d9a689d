"""Orders v2 through the official SDK: approval on the hosted page, capture and authorize
intents, partial captures, voids, refunds, declines, pending captures and business refusals."""

from __future__ import annotations

import httpx
import pytest
from paypalserversdk.exceptions.error_exception import ErrorException
from paypalserversdk.models.capture_request import CaptureRequest
from paypalserversdk.models.money import Money
from paypalserversdk.models.refund_request import RefundRequest
from paypalserversdk.paypal_serversdk_client import PaypalServersdkClient

from hirepay_dev.provider_sandboxes import KitAdmin, paypal_client
from tests.support.paypal_support import (
    CANCEL_URL,
    RETURN_URL,
    approve_on_page,
    approved_order,
    create_order,
    link,
    order_request,
    redirect_query,
)


def _issue(error: ErrorException) -> str:
    assert error.details, error
    return str(error.details[0].issue)


def test_wrong_client_secret_gets_no_token(paypal_url: str) -> None:
    response = httpx.post(
        f"{paypal_url}/v1/oauth2/token",
        auth=("hirepay-sandbox-client-id", "wrong"),
        data={"grant_type": "client_credentials"},
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    with pytest.raises(Exception):  # noqa: B017 - the SDK raises its auth validation error
        paypal_client(paypal_url, client_secret="wrong").orders.get_order({"id": "X"})


def test_api_without_token_is_refused(paypal_url: str) -> None:
    response = httpx.get(f"{paypal_url}/v2/checkout/orders/ABC")
    assert response.status_code == 401
    assert response.json()["name"] == "AUTHENTICATION_FAILURE"


def test_create_answers_minimal_unless_representation_is_preferred(
    paypal: PaypalServersdkClient,
) -> None:
    minimal = paypal.orders.create_order({"body": order_request("12.34")})
    assert minimal.status_code == 201
    assert minimal.body.status == "CREATED"
    assert getattr(minimal.body, "purchase_units", None) is None
    assert link(minimal.body, "approve").endswith(f"/checkoutnow?token={minimal.body.id}")
    full = paypal.orders.get_order({"id": minimal.body.id}).body
    assert full.intent == "CAPTURE"
    assert full.purchase_units[0].amount.value == "12.34"
    assert full.purchase_units[0].amount.currency_code == "USD"


def test_capture_intent_approved_on_the_page_then_captured(paypal: PaypalServersdkClient) -> None:
    order = create_order(paypal, "100.00")
    assert (order.status, len(order.id)) == ("CREATED", 17)
    back = redirect_query(approve_on_page(order))
    assert back["token"] == order.id and back["PayerID"]
    approved = paypal.orders.get_order({"id": order.id}).body
    assert approved.status == "APPROVED"
    assert approved.payer.payer_id == back["PayerID"]

    captured = paypal.orders.capture_order({"id": order.id}).body
    assert captured.status == "COMPLETED"
    capture = captured.purchase_units[0].payments.captures[0]
    assert (capture.status, capture.amount.value, capture.final_capture) == (
        "COMPLETED",
        "100.00",
        True,
    )
    breakdown = capture.seller_receivable_breakdown
    assert breakdown.gross_amount.value == "100.00"
    assert float(breakdown.net_amount.value) == 100.00 - float(breakdown.paypal_fee.value)
    assert (
        paypal.payments.get_captured_payment({"capture_id": capture.id}).body.status == "COMPLETED"
    )

    with pytest.raises(ErrorException) as again:
        paypal.orders.capture_order({"id": order.id})
    assert (again.value.response_code, _issue(again.value)) == (422, "ORDER_ALREADY_CAPTURED")


def test_capture_before_approval_and_wrong_intent_are_refused(
    paypal: PaypalServersdkClient,
) -> None:
    order = create_order(paypal, "10.00")
    with pytest.raises(ErrorException) as raised:
        paypal.orders.capture_order({"id": order.id})
    assert raised.value.response_code == 422
    assert raised.value.name == "UNPROCESSABLE_ENTITY"
    assert _issue(raised.value) == "ORDER_NOT_APPROVED"
    approve_on_page(order)
    with pytest.raises(ErrorException) as wrong:
        paypal.orders.authorize_order({"id": order.id})
    assert _issue(wrong.value) == "ACTION_DOES_NOT_MATCH_INTENT"


def test_unknown_order_is_404(paypal: PaypalServersdkClient) -> None:
    with pytest.raises(ErrorException) as raised:
        paypal.orders.get_order({"id": "NOSUCHORDER000000"})
    assert raised.value.response_code == 404
    assert _issue(raised.value) == "INVALID_RESOURCE_ID"


def test_invalid_body_is_400(paypal_url: str, paypal: PaypalServersdkClient) -> None:
    from paypalserversdk.models.order_request import OrderRequest

    with pytest.raises(ErrorException) as raised:
        paypal.orders.create_order({"body": OrderRequest(intent="CAPTURE", purchase_units=[])})
    assert raised.value.response_code == 400
    assert _issue(raised.value) == "MISSING_REQUIRED_PARAMETER"


def test_buyer_cancels_on_the_page(paypal: PaypalServersdkClient) -> None:
    order = create_order(paypal, "5.00")
    base = link(order, "approve").split("/checkoutnow")[0]
    response = httpx.post(f"{base}/checkoutnow/{order.id}/cancel")
    assert response.status_code == 303
    assert response.headers["location"] == f"{CANCEL_URL}?token={order.id}"
    assert paypal.orders.get_order({"id": order.id}).body.status == "CREATED"


def test_authorize_then_partial_captures_then_rest(paypal: PaypalServersdkClient) -> None:
    order = approved_order(paypal, "100.00", intent="AUTHORIZE")
    authorized = paypal.orders.authorize_order({"id": order.id}).body
    assert authorized.status == "COMPLETED"
    authorization = authorized.purchase_units[0].payments.authorizations[0]
    assert (authorization.status, authorization.amount.value) == ("CREATED", "100.00")
    assert authorization.expiration_time

    first = paypal.payments.capture_authorized_payment(
        {
            "authorization_id": authorization.id,
            "body": CaptureRequest(
                amount=Money(currency_code="USD", value="30.00"), final_capture=False
            ),
            "prefer": "return=representation",
        }
    ).body
    assert (first.status, first.amount.value) == ("COMPLETED", "30.00")
    got = paypal.payments.get_authorized_payment({"authorization_id": authorization.id}).body
    assert got.status == "PARTIALLY_CAPTURED"

    with pytest.raises(ErrorException) as too_much:
        paypal.payments.capture_authorized_payment(
            {
                "authorization_id": authorization.id,
                "body": CaptureRequest(amount=Money(currency_code="USD", value="70.01")),
            }
        )
    assert _issue(too_much.value) == "MAX_CAPTURE_AMOUNT_EXCEEDED"

    rest = paypal.payments.capture_authorized_payment(
        {"authorization_id": authorization.id, "body": CaptureRequest(final_capture=True)}
    )
    assert rest.status_code == 201 and rest.body.status == "COMPLETED"
    assert (
        paypal.payments.get_authorized_payment({"authorization_id": authorization.id}).body.status
        == "CAPTURED"
    )
    full = paypal.orders.get_order({"id": order.id}).body
    assert sorted(c.amount.value for c in full.purchase_units[0].payments.captures) == [
        "30.00",
        "70.00",
    ]

    with pytest.raises(ErrorException) as captured:
        paypal.payments.capture_authorized_payment({"authorization_id": authorization.id})
    assert _issue(captured.value) == "AUTHORIZATION_ALREADY_CAPTURED"
    with pytest.raises(ErrorException) as no_void:
        paypal.payments.void_payment({"authorization_id": authorization.id})
    assert _issue(no_void.value) == "PREVIOUSLY_CAPTURED"


def test_void_authorization(paypal: PaypalServersdkClient) -> None:
    order = approved_order(paypal, "40.00", intent="AUTHORIZE")
    authorization = (
        paypal.orders.authorize_order({"id": order.id})
        .body.purchase_units[0]
        .payments.authorizations[0]
    )
    voided = paypal.payments.void_payment({"authorization_id": authorization.id})
    assert voided.status_code == 204
    assert (
        paypal.payments.get_authorized_payment({"authorization_id": authorization.id}).body.status
        == "VOIDED"
    )
    with pytest.raises(ErrorException) as capture:
        paypal.payments.capture_authorized_payment({"authorization_id": authorization.id})
    assert _issue(capture.value) == "AUTHORIZATION_VOIDED"
    with pytest.raises(ErrorException) as again:
        paypal.payments.void_payment({"authorization_id": authorization.id})
    assert _issue(again.value) == "PREVIOUSLY_VOIDED"


def test_refunds_partial_then_rest_never_beyond(paypal: PaypalServersdkClient) -> None:
    order = approved_order(paypal, "50.00")
    capture = (
        paypal.orders.capture_order({"id": order.id}).body.purchase_units[0].payments.captures[0]
    )
    partial = paypal.payments.refund_captured_payment(
        {
            "capture_id": capture.id,
            "body": RefundRequest(
                amount=Money(currency_code="USD", value="20.00"), note_to_payer="sorry"
            ),
            "prefer": "return=representation",
        }
    ).body
    assert (partial.status, partial.amount.value) == ("COMPLETED", "20.00")
    assert (
        paypal.payments.get_captured_payment({"capture_id": capture.id}).body.status
        == "PARTIALLY_REFUNDED"
    )
    with pytest.raises(ErrorException) as too_much:
        paypal.payments.refund_captured_payment(
            {
                "capture_id": capture.id,
                "body": RefundRequest(amount=Money(currency_code="USD", value="30.01")),
            }
        )
    assert _issue(too_much.value) == "REFUND_AMOUNT_EXCEEDED"
    rest = paypal.payments.refund_captured_payment({"capture_id": capture.id}).body
    assert rest.status == "COMPLETED"
    assert paypal.payments.get_refund({"refund_id": rest.id}).body.amount.value == "30.00"
    assert (
        paypal.payments.get_captured_payment({"capture_id": capture.id}).body.status == "REFUNDED"
    )
    with pytest.raises(ErrorException) as done:
        paypal.payments.refund_captured_payment({"capture_id": capture.id})
    assert _issue(done.value) == "CAPTURE_FULLY_REFUNDED"


def test_declined_instrument_sends_the_buyer_back_to_approve(paypal: PaypalServersdkClient) -> None:
    order = approved_order(paypal, "60.00", funding="declined")
    with pytest.raises(ErrorException) as declined:
        paypal.orders.capture_order({"id": order.id})
    assert (declined.value.response_code, _issue(declined.value)) == (422, "INSTRUMENT_DECLINED")
    assert any(item.rel == "redirect" for item in declined.value.links)
    again = paypal.orders.get_order({"id": order.id}).body
    assert again.status == "CREATED"
    redirect_query(approve_on_page(again, "balance"))
    captured = paypal.orders.capture_order({"id": order.id}).body
    assert captured.purchase_units[0].payments.captures[0].status == "COMPLETED"


def test_denied_capture(paypal: PaypalServersdkClient) -> None:
    order = approved_order(paypal, "70.00", funding="denied")
    captured = paypal.orders.capture_order({"id": order.id}).body
    assert captured.purchase_units[0].payments.captures[0].status == "DECLINED"


def test_pending_capture_settles_through_the_admin_api(
    paypal: PaypalServersdkClient, paypal_admin: KitAdmin
) -> None:
    order = approved_order(paypal, "80.00", funding="pending")
    capture = (
        paypal.orders.capture_order({"id": order.id}).body.purchase_units[0].payments.captures[0]
    )
    assert capture.status == "PENDING"
    assert capture.status_details.reason == "PENDING_REVIEW"
    with pytest.raises(ErrorException):
        paypal.payments.refund_captured_payment({"capture_id": capture.id})
    settled = paypal_admin.call(
        "POST", f"/_sandbox/captures/{capture.id}/settle", {"outcome": "COMPLETED"}
    )
    assert settled["status"] == "COMPLETED"
    assert (
        paypal.payments.get_captured_payment({"capture_id": capture.id}).body.status == "COMPLETED"
    )


def test_negative_testing_mock_response_header(paypal: PaypalServersdkClient) -> None:
    order = approved_order(paypal, "9.00")
    with pytest.raises(ErrorException) as raised:
        paypal.orders.capture_order(
            {
                "id": order.id,
                "paypal_mock_response": '{"mock_application_codes": "TRANSACTION_REFUSED"}',
            }
        )
    assert _issue(raised.value) == "TRANSACTION_REFUSED"
    assert paypal.orders.get_order({"id": order.id}).body.status == "APPROVED"


def test_return_url_gets_token_and_payer_id(paypal: PaypalServersdkClient) -> None:
    order = create_order(paypal, "1.00")
    response = approve_on_page(order)
    assert response.headers["location"].startswith(f"{RETURN_URL}?token={order.id}&PayerID=")


def test_zero_decimal_currency_refuses_decimals(paypal: PaypalServersdkClient) -> None:
    with pytest.raises(ErrorException) as raised:
        paypal.orders.create_order({"body": order_request("100.50", currency="JPY")})
    assert _issue(raised.value) == "DECIMAL_PRECISION"


def test_paypal_payment_source_asks_for_payer_action(paypal: PaypalServersdkClient) -> None:
    from paypalserversdk.models.payment_source import PaymentSource
    from paypalserversdk.models.paypal_wallet import PaypalWallet
    from paypalserversdk.models.paypal_wallet_experience_context import (
        PaypalWalletExperienceContext,
    )

    body = order_request("19.99")
    body.application_context = None
    body.payment_source = PaymentSource(
        paypal=PaypalWallet(
            experience_context=PaypalWalletExperienceContext(
                return_url=RETURN_URL, cancel_url=CANCEL_URL
            )
        )
    )
    order = paypal.orders.create_order({"body": body, "prefer": "return=representation"}).body
    assert order.status == "PAYER_ACTION_REQUIRED"
    action = link(order, "payer-action")
    assert action.endswith(f"/checkoutnow?token={order.id}")
    approved = httpx.post(
        action.replace(f"/checkoutnow?token={order.id}", f"/checkoutnow/{order.id}/approve"),
        data={"funding": "balance"},
    )
    assert redirect_query(approved)["token"] == order.id
    assert paypal.orders.capture_order({"id": order.id}).body.status == "COMPLETED"


def test_expired_access_token_is_refused(paypal_url: str, paypal_admin: KitAdmin) -> None:
    client = paypal_client(paypal_url)
    client.orders.create_order({"body": order_request("2.00")})  # fetches and caches a token
    paypal_admin.advance_clock(32400 + 1)  # the sandbox's clock passes the token's expiry
    try:
        with pytest.raises(ErrorException) as raised:
            client.orders.create_order({"body": order_request("2.00")})
        assert raised.value.response_code == 401
    finally:
        paypal_admin.reset()  # the clock back to real time (objects of other tests are not needed)
