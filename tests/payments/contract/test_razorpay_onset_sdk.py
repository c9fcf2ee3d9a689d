"""Razorpay's deduct at onset, read by the real adapter through the official `razorpay` SDK
(`client.dispute.fetch`) from the Razorpay sandbox (ESC-1, API-3): a dispute opened with the
deduction taken at once reads with its deduction (`<dispute>:deducted`) from its signed
`payment.dispute.created` on; won, with the reversal beside it (`<dispute>:reversed`); lost,
with the one deduction and nothing more. Every event of it is verified and read as about the
dispute (re-fetched, never the event's copy)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from payments.domain.disputes import DisputeMoney, DisputeStatus
from payments.domain.provider import EventSubject, ProviderEvent, SignatureInvalid
from tests.payments.contract.test_provider_contract import paid_checkout
from tests.support.provider_harnesses import HARNESSES, Receiver, Running, running

HARNESS = HARNESSES["razorpay"]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def run(receiver: Receiver) -> Iterator[Running]:
    with running(HARNESS, receiver) as r:
        yield r


async def _disputed_at_onset(run: Running) -> tuple[str, int]:
    """A payment paid on the page and disputed in full with deduct at onset: the dispute's id
    and amount."""
    checkout, _ = await paid_checkout(HARNESS, run)
    answer = run.http.post(
        f"{run.base_url}/_sandbox/payments/{checkout.payment_id}/dispute",
        json={"deduct_at_onset": True},
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"]), int(answer.json()["amount"])


def _step(run: Running, dispute_id: str, to: str) -> None:
    answer = run.http.post(f"{run.base_url}/_sandbox/disputes/{dispute_id}/step", json={"to": to})
    assert answer.status_code == 200, answer.text


async def _event(run: Running, receiver: Receiver, dispute_id: str, kind: str) -> ProviderEvent:
    """The verified `kind` event about the dispute the receiver got (waited for)."""
    for _ in range(100):
        for headers, body in list(receiver.received):
            try:
                event = await run.provider.verify_event(body, headers)
            except SignatureInvalid:
                continue
            if event.type == kind and event.object_id == dispute_id:
                assert event.subject is EventSubject.DISPUTE
                return event
        await asyncio.sleep(0.1)
    raise AssertionError(f"no verified {kind} about {dispute_id}")


async def test_a_dispute_deducted_at_onset_and_won_reads_as_the_deduction_and_its_reversal(
    run: Running, receiver: Receiver
) -> None:
    dispute_id, amount = await _disputed_at_onset(run)
    deducted = DisputeMoney(
        f"{dispute_id}:deducted", -amount, 0, HARNESS.currency, running=True, growing=True
    )
    await _event(run, receiver, dispute_id, "payment.dispute.created")
    opened = await run.provider.retrieve_dispute(dispute_id)
    assert (opened.status, opened.amount_minor, opened.money) == (
        DisputeStatus.NEEDS_RESPONSE,
        amount,
        (deducted,),
    )
    _step(run, dispute_id, "under_review")
    await _event(run, receiver, dispute_id, "payment.dispute.under_review")
    assert (await run.provider.retrieve_dispute(dispute_id)).money == (deducted,)
    _step(run, dispute_id, "won")
    await _event(run, receiver, dispute_id, "payment.dispute.won")
    won = await run.provider.retrieve_dispute(dispute_id)
    reversed_ = DisputeMoney(
        f"{dispute_id}:reversed", amount, 0, HARNESS.currency, running=True, growing=True
    )
    assert (won.status, won.money) == (DisputeStatus.WON, (deducted, reversed_))


async def test_a_dispute_deducted_at_onset_and_lost_reads_as_the_one_deduction(
    run: Running, receiver: Receiver
) -> None:
    dispute_id, amount = await _disputed_at_onset(run)
    deducted = DisputeMoney(
        f"{dispute_id}:deducted", -amount, 0, HARNESS.currency, running=True, growing=True
    )
    assert (await run.provider.retrieve_dispute(dispute_id)).money == (deducted,)
    _step(run, dispute_id, "lost")
    await _event(run, receiver, dispute_id, "payment.dispute.lost")
    lost = await run.provider.retrieve_dispute(dispute_id)
    assert (lost.status, lost.money) == (DisputeStatus.LOST, (deducted,))
