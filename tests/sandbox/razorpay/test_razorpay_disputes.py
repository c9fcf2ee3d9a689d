"""Razorpay disputes in the sandbox: the admin routes open a dispute of a captured payment and
move it (under_review, action_required, won, lost, closed), each step a signed
`payment.dispute.*` webhook carrying the payment and the dispute (verifiable with the SDK); the
SDK's Disputes API (`client.dispute.fetch`) shows it, `amount_deducted` 0 until it is lost —
or, deducted at onset, from its opening, reversed (`amount_reversed`) if it is won."""

from __future__ import annotations

import httpx
import razorpay

from tests.support.razorpay_support import WEBHOOK_SECRET, create_order, pay_by_card
from tests.support.webhook_receiver import ProviderReceiver


def _dispute(razorpay_url: str, rzp: razorpay.Client, amount: int) -> dict:  # type: ignore[type-arg]
    order = create_order(rzp, amount)
    payment_id = pay_by_card(razorpay_url, order["id"])["razorpay_payment_id"]
    answer = httpx.post(f"{razorpay_url}/_sandbox/payments/{payment_id}/dispute", json={})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _step(razorpay_url: str, dispute_id: str, to: str) -> httpx.Response:
    return httpx.post(f"{razorpay_url}/_sandbox/disputes/{dispute_id}/step", json={"to": to})


def test_a_dispute_opened_contested_and_lost_sends_each_step_signed(
    razorpay_url: str, rzp: razorpay.Client, razorpay_receiver: ProviderReceiver
) -> None:
    made = _dispute(razorpay_url, rzp, 20_000)
    payment_id = made["payment_id"]
    created = razorpay_receiver.wait_about(payment_id, "payment.dispute.created")[0]
    assert created.event["contains"] == ["payment", "dispute"]
    assert created.event["payload"]["dispute"]["entity"]["id"] == made["id"]
    assert rzp.utility.verify_webhook_signature(
        created.body.decode(), created.header("X-Razorpay-Signature"), WEBHOOK_SECRET
    )
    shown = rzp.dispute.fetch(made["id"])
    assert (shown["status"], shown["phase"], shown["amount"], shown["amount_deducted"]) == (
        "open",
        "chargeback",
        20_000,
        0,
    )
    assert _step(razorpay_url, made["id"], "under_review").status_code == 200
    razorpay_receiver.wait_about(payment_id, "payment.dispute.under_review")
    assert _step(razorpay_url, made["id"], "lost").status_code == 200
    lost = razorpay_receiver.wait_about(payment_id, "payment.dispute.lost")[0]
    assert lost.event["payload"]["dispute"]["entity"]["amount_deducted"] == 20_000
    assert rzp.dispute.fetch(made["id"])["status"] == "lost"
    again = _step(razorpay_url, made["id"], "won")
    assert again.status_code == 409 and "already lost" in again.text


def test_a_won_dispute_deducts_nothing_and_only_captured_payments_are_disputed(
    razorpay_url: str, rzp: razorpay.Client, razorpay_receiver: ProviderReceiver
) -> None:
    made = _dispute(razorpay_url, rzp, 15_000)
    assert _step(razorpay_url, made["id"], "won").status_code == 200
    won = razorpay_receiver.wait_about(made["payment_id"], "payment.dispute.won")[0]
    assert won.event["payload"]["dispute"]["entity"]["amount_deducted"] == 0
    order = create_order(rzp, 12_000, capture=False)
    held = pay_by_card(razorpay_url, order["id"])["razorpay_payment_id"]
    refused = httpx.post(f"{razorpay_url}/_sandbox/payments/{held}/dispute", json={})
    assert refused.status_code == 409
    assert (
        httpx.post(f"{razorpay_url}/_sandbox/disputes/disp_x/step", json={"to": "won"}).status_code
        == 404
    )


def test_a_dispute_deducted_at_onset_shows_the_deduction_from_creation_and_gives_it_back_if_won(
    razorpay_url: str, rzp: razorpay.Client, razorpay_receiver: ProviderReceiver
) -> None:
    """Razorpay's deduct at onset: `amount_deducted` is the disputed amount as the dispute
    opens; won, the deduction is reversed (`amount_reversed`, the deduction still shown);
    lost, it stays deducted and nothing more is taken."""
    order = create_order(rzp, 30_000)
    payment_id = pay_by_card(razorpay_url, order["id"])["razorpay_payment_id"]
    opened = httpx.post(
        f"{razorpay_url}/_sandbox/payments/{payment_id}/dispute",
        json={"amount": 25_000, "deduct_at_onset": True},
    )
    assert opened.status_code == 200, opened.text
    made = opened.json()
    created = razorpay_receiver.wait_about(payment_id, "payment.dispute.created")[0]
    sent = created.event["payload"]["dispute"]["entity"]
    assert (sent["amount_deducted"], sent["amount_reversed"], sent["deduct_at_onset"]) == (
        25_000,
        0,
        True,
    )
    shown = rzp.dispute.fetch(made["id"])
    assert (shown["status"], shown["amount_deducted"], shown["amount_reversed"]) == (
        "open",
        25_000,
        0,
    )
    assert _step(razorpay_url, made["id"], "won").status_code == 200
    won = razorpay_receiver.wait_about(payment_id, "payment.dispute.won")[0]
    assert won.event["payload"]["dispute"]["entity"]["amount_reversed"] == 25_000
    shown = rzp.dispute.fetch(made["id"])
    assert (shown["status"], shown["amount_deducted"], shown["amount_reversed"]) == (
        "won",
        25_000,
        25_000,
    )

    lost = _dispute_at_onset(razorpay_url, rzp, 18_000)
    assert _step(razorpay_url, lost["id"], "lost").status_code == 200
    shown = rzp.dispute.fetch(lost["id"])
    assert (shown["status"], shown["amount_deducted"], shown["amount_reversed"]) == (
        "lost",
        18_000,
        0,
    )


def _dispute_at_onset(razorpay_url: str, rzp: razorpay.Client, amount: int) -> dict:  # type: ignore[type-arg]
    order = create_order(rzp, amount)
    payment_id = pay_by_card(razorpay_url, order["id"])["razorpay_payment_id"]
    answer = httpx.post(
        f"{razorpay_url}/_sandbox/payments/{payment_id}/dispute", json={"deduct_at_onset": True}
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())
