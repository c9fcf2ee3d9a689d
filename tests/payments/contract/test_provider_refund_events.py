"""Refunds made at PayPal and Razorpay (their dashboards), as the adapters read them from the
offline sandboxes (ESC-1, API-3): the refund's webhook, sent as the real provider sends it and
verified its way, is a REFUND event about the domain's payment (PayPal's names the capture, whose
order the adapter finds); the payment's refunds re-fetched list it without any mark of Hirepay's,
and Hirepay's own refund with its record's id read back (what keeps it from being booked twice
when its event beats its answer)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from hirepay_dev.provider_sandboxes import paypal_client
from payments.domain.provider import EventSubject, ProviderEvent, RefundState, SignatureInvalid
from tests.payments.contract.test_provider_contract import paid_checkout
from tests.support.provider_harnesses import HARNESSES, Harness, Receiver, Running, running

PROVIDERS = ("paypal", "razorpay")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture(scope="module", params=PROVIDERS, ids=PROVIDERS)
def harness(request: pytest.FixtureRequest) -> Harness:
    return HARNESSES[request.param]


@pytest.fixture(scope="module")
def run(harness: Harness, receiver: Receiver) -> Iterator[Running]:
    with running(harness, receiver) as r:
        yield r


def _dashboard_refund(harness: Harness, run: Running, payment_id: str, amount: int) -> str:
    """A refund made in the provider's dashboard (the sandbox's admin route); its id."""
    if harness.name == "paypal":
        order = paypal_client(run.base_url).orders.get_order({"id": payment_id}).body
        capture_id = order.purchase_units[0].payments.captures[0].id
        path = f"/_sandbox/captures/{capture_id}/refund"
        answer = run.http.post(f"{run.base_url}{path}", json={"amount_minor": amount})
    else:
        path = f"/_sandbox/payments/{payment_id}/refund"
        answer = run.http.post(f"{run.base_url}{path}", json={"amount": amount})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


async def _refund_events(
    run: Running, receiver: Receiver, refund_id: str, wanted: frozenset[str] = frozenset()
) -> list[ProviderEvent]:
    """The verified events about `refund_id` the receiver got, waited for until there is one and
    every type in `wanted` is among them (a provider's events are separate deliveries: Razorpay's
    refund.created may arrive alone first)."""
    for _ in range(100):
        found = []
        for headers, body in list(receiver.received):
            try:
                event = await run.provider.verify_event(body, headers)
            except SignatureInvalid:
                continue
            if event.subject is EventSubject.REFUND and event.object_id == refund_id:
                found.append(event)
        if found and wanted <= {e.type for e in found}:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"no verified refund event about {refund_id} (wanted {sorted(wanted)})")


async def test_a_dashboard_refund_sends_a_refund_event_about_the_payment(
    harness: Harness, run: Running, receiver: Receiver
) -> None:
    checkout, _ = await paid_checkout(harness, run)
    pid = checkout.payment_id
    part = harness.amount // 5
    rid = _dashboard_refund(harness, run, pid, part)
    wanted = {"paypal": {"PAYMENT.CAPTURE.REFUNDED"}, "razorpay": {"refund.processed"}}
    events = await _refund_events(run, receiver, rid, frozenset(wanted[harness.name]))
    assert wanted[harness.name] <= {e.type for e in events}
    assert {e.payment_id for e in events} == {pid}  # the domain's payment (PayPal: the order)
    [listed] = await run.provider.list_refunds(pid)
    assert (listed.id, listed.state, listed.amount_minor) == (rid, RefundState.SUCCEEDED, part)
    assert not listed.metadata.get("hirepay_refund_id")  # not Hirepay's: to be booked


async def test_hirepays_own_refund_is_listed_with_its_records_id(
    harness: Harness, run: Running, receiver: Receiver
) -> None:
    checkout, _ = await paid_checkout(harness, run)
    pid = checkout.payment_id
    made = await run.provider.refund(
        pid, harness.amount, "requested_by_customer", {"hirepay_refund_id": "rfd_own1"}, "k-own1"
    )
    events = await _refund_events(run, receiver, made.id)
    assert {e.payment_id for e in events} == {pid}
    [listed] = await run.provider.list_refunds(pid)
    assert listed.id == made.id and listed.metadata["hirepay_refund_id"] == "rfd_own1"
    # A plan purchase's refund (the admin's) is told by its transaction id the same way.
    checkout, _ = await paid_checkout(harness, run)
    made = await run.provider.refund(
        checkout.payment_id, harness.amount, "", {"transaction_id": "txn_own1"}, "k-own2"
    )
    [listed] = await run.provider.list_refunds(checkout.payment_id)
    assert listed.metadata.get("transaction_id") == "txn_own1"
