"""The Fatora sandbox over plain HTTP (Fatora ships no SDK): checkout, the hosted page (pay,
decline, cancel, pending), verify, refund, api_key auth, signed webhooks and faults."""

from __future__ import annotations

import hashlib
import hmac
import time

import httpx
import pytest

from hirepay_dev.provider_sandboxes import KitAdmin
from tests.support.fatora_support import (
    DECLINED,
    EXPIRED,
    FAILURE_URL,
    SUCCESS_URL,
    TIMED_OUT,
    WEBHOOK_SECRET,
    api,
    checkout,
    pay,
    redirect,
)
from tests.support.webhook_receiver import ProviderReceiver

# A dropped connection (the sandbox aborts it) reads as an EOF or a reset, by timing.
DROPPED = (httpx.RemoteProtocolError, httpx.ReadError)


def _verify(fatora: httpx.Client, order_id: str, transaction_id: str | None = None) -> dict:
    body = {"order_id": order_id, **({"transaction_id": transaction_id} if transaction_id else {})}
    response = fatora.post("/v1/payments/verify", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "SUCCESS"
    return dict(response.json()["result"])


def test_wrong_api_key_is_refused(fatora_url: str) -> None:
    with api(fatora_url, api_key="not-the-key") as wrong:
        response = wrong.post("/v1/payments/checkout", json={})
    assert response.status_code == 401
    assert response.json() == {"status": "ERROR", "error": "Invalid API Key"}


def test_checkout_validation(fatora: httpx.Client) -> None:
    missing = fatora.post("/v1/payments/checkout", json={"amount": 10, "currency": "QAR"})
    assert missing.json()["status"] == "ERROR" and "order_id" in missing.json()["error"]
    too_precise = fatora.post(
        "/v1/payments/checkout",
        json={
            "amount": 1.005,
            "currency": "QAR",
            "order_id": "x",
            "success_url": "https://a",
            "failure_url": "https://b",
        },
    )
    assert too_precise.status_code == 400 and "decimals" in too_precise.json()["error"]


def test_pay_redirects_to_success_url_and_verifies(fatora: httpx.Client) -> None:
    order_id, url = checkout(fatora, 123.10)
    assert "/pay/MCPaymentPage?paymentID=" in url
    before = _verify(fatora, order_id)
    assert before["payment_status"] == "PENDING" and before["transaction_id"] is None
    target, query = redirect(pay(url))
    assert target == SUCCESS_URL
    assert query["order_id"] == order_id and query["status"] == "SUCCESS"
    result = _verify(fatora, order_id, query["transaction_id"])
    assert (result["payment_status"], result["amount"], result["currency"], result["mode"]) == (
        "SUCCESS",
        123.1,
        "QAR",
        "test",
    )
    assert result["auth_code"] and result["description"] == "Transaction Successful - Approved"
    assert result["client"]["email"] == "buyer@example.com"


def test_forged_transaction_id_does_not_verify(fatora: httpx.Client) -> None:
    order_id, url = checkout(fatora, 10)
    redirect(pay(url))
    forged = fatora.post(
        "/v1/payments/verify", json={"order_id": order_id, "transaction_id": "000000000000"}
    )
    assert forged.status_code == 404 and forged.json()["status"] == "ERROR"


@pytest.mark.parametrize(
    ("expiry", "words"), [(DECLINED, "Do not honour"), (EXPIRED, "Expired card")]
)
def test_declines_go_to_failure_url(fatora: httpx.Client, expiry: str, words: str) -> None:
    order_id, url = checkout(fatora, 20)
    target, query = redirect(pay(url, expiry=expiry))
    assert (target, query["status"]) == (FAILURE_URL, "FAILURE")
    result = _verify(fatora, order_id, query["transaction_id"])
    assert result["payment_status"] == "FAILURE" and words in result["description"]
    # A declined order can be checked out again and paid.
    _, again = checkout(fatora, 20, order_id=order_id)
    _, paid = redirect(pay(again))
    assert _verify(fatora, order_id)["payment_status"] == "SUCCESS"
    assert paid["transaction_id"] != query["transaction_id"]


def test_non_test_card_declines(fatora: httpx.Client) -> None:
    order_id, url = checkout(fatora, 21)
    target, _ = redirect(pay(url, card="4111 1111 1111 1111"))
    assert target == FAILURE_URL
    assert "Invalid card" in _verify(fatora, order_id)["description"]


def test_cancel_returns_to_failure_url_and_keeps_the_checkout(fatora: httpx.Client) -> None:
    order_id, url = checkout(fatora, 22)
    payment_id = url.split("paymentID=")[1]
    response = httpx.post(url.split("/pay/")[0] + f"/pay/{payment_id}/cancel")
    target, query = redirect(response)
    assert (target, query) == (FAILURE_URL, {"order_id": order_id, "status": "CANCELED"})
    assert checkout(fatora, 22, order_id=order_id)[1] == url  # same page, still payable
    redirect(pay(url))


def test_pending_until_settled(
    fatora: httpx.Client, fatora_admin: KitAdmin, fatora_receiver: ProviderReceiver
) -> None:
    order_id, url = checkout(fatora, 23)
    response = pay(url, expiry=TIMED_OUT)
    assert response.status_code == 202
    assert _verify(fatora, order_id)["payment_status"] == "PENDING"
    settled = fatora_admin.call(
        "POST", f"/_sandbox/orders/{order_id}/settle", {"outcome": "SUCCESS"}
    )
    assert settled["payment_status"] == "SUCCESS"
    fatora_receiver.wait_about(order_id, "payment.success")


def test_paid_order_cannot_be_checked_out_again(fatora: httpx.Client) -> None:
    order_id, url = checkout(fatora, 24)
    redirect(pay(url))
    again = fatora.post(
        "/v1/payments/checkout",
        json={
            "amount": 24,
            "currency": "QAR",
            "order_id": order_id,
            "success_url": SUCCESS_URL,
            "failure_url": FAILURE_URL,
        },
    )
    assert again.status_code == 409 and again.json()["status"] == "ERROR"


def test_refund_once(fatora: httpx.Client, fatora_receiver: ProviderReceiver) -> None:
    order_id, url = checkout(fatora, 50)
    _, query = redirect(pay(url))
    body = {"order_id": order_id, "transaction_id": query["transaction_id"]}
    refunded = fatora.post("/v1/payments/refund", json=body)
    assert refunded.json() == {
        "status": "SUCCESS",
        "result": {
            "refund_status": "completed",
            "order_id": order_id,
            "transaction_id": query["transaction_id"],
        },
    }
    assert _verify(fatora, order_id)["refund_status"] == "completed"
    again = fatora.post("/v1/payments/refund", json=body)
    assert again.status_code == 409 and "already refunded" in again.json()["error"]
    fatora_receiver.wait_about(order_id, "refund.completed")


def test_a_refund_at_the_dashboard_shows_on_verify_and_sends_no_webhook(
    fatora: httpx.Client, fatora_admin: KitAdmin, fatora_receiver: ProviderReceiver
) -> None:
    """The merchant's dashboard refunds the whole payment once, like the API; Fatora documents
    no refund notification, so verify's `refund_status` is the only word of it."""
    order_id, url = checkout(fatora, 52)
    redirect(pay(url))
    fatora_receiver.wait_about(order_id, "payment.success")
    refunded = fatora_admin.call("POST", f"/_sandbox/orders/{order_id}/refund")
    assert (refunded["order_id"], refunded["refund_status"]) == (order_id, "completed")
    assert _verify(fatora, order_id)["refund_status"] == "completed"
    again = fatora_admin.http.post(f"/_sandbox/orders/{order_id}/refund")
    assert again.status_code == 409 and "already refunded" in again.json()["error"]["message"]
    by_api = fatora.post("/v1/payments/refund", json={"order_id": order_id})
    assert by_api.status_code == 409 and "already refunded" in by_api.json()["error"]
    unpaid, _ = checkout(fatora, 53)
    assert fatora_admin.http.post(f"/_sandbox/orders/{unpaid}/refund").status_code == 409
    assert fatora_admin.http.post("/_sandbox/orders/no-such-order/refund").status_code == 404
    time.sleep(0.3)  # a webhook, were one sent, would be delivered by now
    assert fatora_receiver.about(order_id, "refund.completed") == []


def test_unpaid_order_cannot_be_refunded(fatora: httpx.Client) -> None:
    order_id, _ = checkout(fatora, 51)
    response = fatora.post("/v1/payments/refund", json={"order_id": order_id})
    assert response.status_code == 409


def test_webhooks_are_signed_and_retried(
    fatora: httpx.Client, fatora_admin: KitAdmin, fatora_receiver: ProviderReceiver
) -> None:
    order_id, url = checkout(fatora, 60)
    fatora_receiver.fail(order_id, 500, 503)
    redirect(pay(url))
    tries = fatora_receiver.wait_about(order_id, "payment.success", count=3)
    assert [t.answered for t in tries] == [500, 503, 200]
    delivery = tries[-1]
    expected = hmac.new(WEBHOOK_SECRET.encode(), delivery.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(delivery.header("X-Fatora-Signature"), expected)
    forged = hmac.new(b"wrong", delivery.body, hashlib.sha256).hexdigest()
    assert not hmac.compare_digest(delivery.header("X-Fatora-Signature"), forged)
    assert delivery.event["result"]["payment_status"] == "SUCCESS"
    fatora_admin.wait_for_deliveries(delivery.event["id"])


def test_webhook_drop_and_duplicate(
    fatora: httpx.Client, fatora_admin: KitAdmin, fatora_receiver: ProviderReceiver
) -> None:
    fatora_admin.add_fault("webhook_drop", count=1, event_type="payment.failure")
    order_id, url = checkout(fatora, 61)
    redirect(pay(url, expiry=DECLINED))
    fatora_admin.add_fault("webhook_duplicate", times=2, count=1)
    _, again = checkout(fatora, 61, order_id=order_id)
    redirect(pay(again))
    copies = fatora_receiver.wait_about(order_id, "payment.success", count=2)
    assert copies[0].body == copies[1].body
    assert fatora_receiver.about(order_id, "payment.failure") == []


def test_api_faults(fatora: httpx.Client, fatora_admin: KitAdmin) -> None:
    fatora_admin.add_fault("latency", ms=300, count=1, path_prefix="/v1/payments/checkout")
    started = time.monotonic()
    checkout(fatora, 70)
    assert time.monotonic() - started >= 0.3
    fatora_admin.add_fault("error", status=502, count=1, path_prefix="/v1/payments/verify")
    order_id, _ = checkout(fatora, 71)
    failed = fatora.post("/v1/payments/verify", json={"order_id": order_id})
    assert failed.status_code == 502 and failed.json()["status"] == "ERROR"
    fatora_admin.add_fault("down", count=1, path_prefix="/v1/payments/verify")
    with pytest.raises(DROPPED):
        fatora.post("/v1/payments/verify", json={"order_id": order_id})
    assert _verify(fatora, order_id)["payment_status"] == "PENDING"


def test_lost_refund_answer_then_verify_shows_it(
    fatora: httpx.Client, fatora_admin: KitAdmin
) -> None:
    order_id, url = checkout(fatora, 80)
    redirect(pay(url))
    fatora_admin.add_fault("down_after_commit", count=1, path_prefix="/v1/payments/refund")
    with pytest.raises(DROPPED):
        fatora.post("/v1/payments/refund", json={"order_id": order_id})
    # Fatora has no idempotency key: verify tells the caller the refund happened.
    assert _verify(fatora, order_id)["refund_status"] == "completed"
