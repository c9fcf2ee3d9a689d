"""PayPal disputes in the sandbox: the admin routes open a dispute of a capture (the buyer's
claim, or a chargeback with PayPal's fee), move it and resolve it, each step a signed
`CUSTOMER.DISPUTE.*` webhook whose resource is the dispute (verifiable with PayPal's verify
API), and `GET /v1/customer/disputes/{id}` shows it: the capture it disputes, the amount held
when it opened and released when the seller won."""

from __future__ import annotations

import httpx
from paypalserversdk.paypal_serversdk_client import PaypalServersdkClient

from tests.sandbox.paypal.test_paypal_webhooks import _token, _verify
from tests.support.paypal_support import approved_order
from tests.support.webhook_receiver import ProviderReceiver


def _capture(paypal: PaypalServersdkClient, value: str) -> str:
    order = approved_order(paypal, value)
    captured = paypal.orders.capture_order({"id": order.id}).body
    return str(captured.purchase_units[0].payments.captures[0].id)


def _shown(paypal_url: str, dispute_id: str) -> dict:  # type: ignore[type-arg]
    answer = httpx.get(
        f"{paypal_url}/v1/customer/disputes/{dispute_id}",
        headers={"Authorization": f"Bearer {_token(paypal_url)}"},
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_a_dispute_opened_moved_and_won_sends_each_step_signed(
    paypal_url: str, paypal: PaypalServersdkClient, paypal_receiver: ProviderReceiver
) -> None:
    capture_id = _capture(paypal, "40.00")
    answer = httpx.post(
        f"{paypal_url}/_sandbox/captures/{capture_id}/dispute", json={"fee_minor": 2_000}
    )
    assert answer.status_code == 200, answer.text
    dispute_id = answer.json()["dispute_id"]
    created = paypal_receiver.wait_about(dispute_id, "CUSTOMER.DISPUTE.CREATED")[0]
    assert _verify(paypal_url, created) == "SUCCESS"
    assert created.event["resource_type"] == "dispute"
    shown = _shown(paypal_url, dispute_id)
    assert shown == created.event["resource"]
    assert shown["disputed_transactions"][0]["seller_transaction_id"] == capture_id
    assert (shown["status"], shown["dispute_amount"]["value"]) == (
        "WAITING_FOR_SELLER_RESPONSE",
        "40.00",
    )
    assert [(m["type"], m["reason"], m["amount"]["value"]) for m in shown["money_movements"]] == [
        ("DEBIT", "DISPUTE_SETTLEMENT", "40.00"),
        ("DEBIT", "CHARGEBACK_FEE", "20.00"),
    ]
    moved = httpx.post(f"{paypal_url}/_sandbox/disputes/{dispute_id}/update", json={})
    assert moved.status_code == 200, moved.text
    updated = paypal_receiver.wait_about(dispute_id, "CUSTOMER.DISPUTE.UPDATED")[0]
    assert updated.event["resource"]["status"] == "UNDER_REVIEW"
    won = httpx.post(
        f"{paypal_url}/_sandbox/disputes/{dispute_id}/resolve",
        json={"outcome": "RESOLVED_SELLER_FAVOUR"},
    )
    assert won.status_code == 200, won.text
    resolved = paypal_receiver.wait_about(dispute_id, "CUSTOMER.DISPUTE.RESOLVED")[0]
    assert _verify(paypal_url, resolved) == "SUCCESS"
    shown = _shown(paypal_url, dispute_id)
    assert (shown["status"], shown["dispute_outcome"]["outcome_code"]) == (
        "RESOLVED",
        "RESOLVED_SELLER_FAVOUR",
    )
    assert shown["money_movements"][-1]["type"] == "CREDIT"  # the hold released
    again = httpx.post(f"{paypal_url}/_sandbox/disputes/{dispute_id}/resolve", json={})
    assert again.status_code == 409 and "DISPUTE_RESOLVED" in again.text


def test_a_dispute_lost_in_part_names_what_the_buyer_got_and_refusals(
    paypal_url: str, paypal: PaypalServersdkClient
) -> None:
    capture_id = _capture(paypal, "30.00")
    too_much = httpx.post(
        f"{paypal_url}/_sandbox/captures/{capture_id}/dispute", json={"amount_minor": 3_001}
    )
    assert too_much.status_code == 409
    assert httpx.post(f"{paypal_url}/_sandbox/captures/NOPE/dispute", json={}).status_code == 404
    opened = httpx.post(f"{paypal_url}/_sandbox/captures/{capture_id}/dispute", json={}).json()
    lost = httpx.post(
        f"{paypal_url}/_sandbox/disputes/{opened['dispute_id']}/resolve",
        json={"outcome": "ACCEPTED", "amount_refunded_minor": 1_000},
    )
    assert lost.status_code == 200, lost.text
    shown = _shown(paypal_url, opened["dispute_id"])
    assert shown["dispute_outcome"] == {
        "outcome_code": "ACCEPTED",
        "amount_refunded": {"currency_code": "USD", "value": "10.00"},
    }
    assert [(m["type"], m["amount"]["value"]) for m in shown["money_movements"]] == [
        ("DEBIT", "30.00"),
        ("CREDIT", "20.00"),  # the part the buyer did not get back, released
    ]


def test_a_fee_changed_a_refund_in_another_currency_and_a_dispute_of_two_captures(
    paypal_url: str, paypal: PaypalServersdkClient
) -> None:
    first, second = _capture(paypal, "30.00"), _capture(paypal, "12.50")
    opened = httpx.post(
        f"{paypal_url}/_sandbox/captures/{first}/dispute",
        json={"fee_minor": 2_000, "also_captures": [second]},
    ).json()
    dispute_id = opened["dispute_id"]
    shown = _shown(paypal_url, dispute_id)
    assert [t["seller_transaction_id"] for t in shown["disputed_transactions"]] == [first, second]
    assert shown["dispute_amount"] == {"currency_code": "USD", "value": "42.50"}  # both
    # PayPal changes its fee: the difference is a money movement of its own.
    for total in (2_500, 1_500):
        moved = httpx.post(
            f"{paypal_url}/_sandbox/disputes/{dispute_id}/update", json={"fee_minor": total}
        )
        assert moved.status_code == 200, moved.text
    fees = [
        (m["type"], m["amount"]["value"])
        for m in _shown(paypal_url, dispute_id)["money_movements"]
        if m["reason"] == "CHARGEBACK_FEE"
    ]
    assert fees == [("DEBIT", "20.00"), ("DEBIT", "5.00"), ("CREDIT", "10.00")]
    # The buyer refunded in EUR: shown in EUR, nothing released to the seller.
    lost = httpx.post(
        f"{paypal_url}/_sandbox/disputes/{dispute_id}/resolve",
        json={
            "outcome": "RESOLVED_BUYER_FAVOUR",
            "amount_refunded_minor": 1_000,
            "amount_refunded_currency": "EUR",
        },
    )
    assert lost.status_code == 200, lost.text
    shown = _shown(paypal_url, dispute_id)
    assert shown["dispute_outcome"]["amount_refunded"] == {"currency_code": "EUR", "value": "10.00"}
    assert not [m for m in shown["money_movements"] if m["reason"] == "DISPUTE_SETTLEMENT"][1:]
