"""Disputes (chargebacks) opened and decided at PayPal and Razorpay, learned by webhook (ESC-1
every cent, API-3, PAY-4, PAY-15), through the real payments process on PostgreSQL, the real
wallet and both offline sandboxes (their admin routes open and decide the dispute and send the
real signed `CUSTOMER.DISPUTE.*` / `payment.dispute.*` webhooks): each delivery ten times at
once records the dispute once and books each of its money movements once; a posting fee's
dispute lost in full tells jobs (`payment.charged_back`), a won one gives the money back and
tells nothing; a PayPal dispute of two payments books each its exact share (pro rata, or by the
items PayPal names). Balances asserted to the cent and the ledger auditor clean."""

from __future__ import annotations

import grpc
import httpx
import pytest

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay_dev.provider_sandboxes import paypal_client
from tests.payments.grpc import test_provider_refunds_paypal_razorpay as refunds
from tests.payments.grpc.test_provider_refunds_paypal_razorpay import (
    FEES,
    ProviderStack,
    _captured_fee,
    _deliver_at_once,
    _settlement_types,
)
from tests.payments.ledger.test_ledger_bookings import Ledger, _findings
from tests.support.waiting import wait_for

# The refund tests' stack (PayPal and Razorpay sandboxes, payments, wallet) and fixtures.
provider_stack, jobs_stub, provider = refunds.provider_stack, refunds.jobs_stub, refunds.provider
Status = pb.PaymentDispute.Status
PAYPAL_FEE = 2_000  # a chargeback fee PayPal debits the seller (USD cents)
# The admin step that decides a dispute, per provider and outcome.
DECIDE = {
    ("paypal", "lost"): ("resolve", {"outcome": "RESOLVED_BUYER_FAVOUR"}),
    ("paypal", "won"): ("resolve", {"outcome": "RESOLVED_SELLER_FAVOUR"}),
    ("razorpay", "lost"): ("step", {"to": "lost"}),
    ("razorpay", "won"): ("step", {"to": "won"}),
}
DECIDED_EVENT = {
    ("paypal", "lost"): "CUSTOMER.DISPUTE.RESOLVED",
    ("paypal", "won"): "CUSTOMER.DISPUTE.RESOLVED",
    ("razorpay", "lost"): "payment.dispute.lost",
    ("razorpay", "won"): "payment.dispute.won",
}
MOVE = {"paypal": ("update", {}), "razorpay": ("step", {"to": "under_review"})}
MOVED_EVENT = {"paypal": "CUSTOMER.DISPUTE.UPDATED", "razorpay": "payment.dispute.under_review"}
OPENED_EVENT = {"paypal": "CUSTOMER.DISPUTE.CREATED", "razorpay": "payment.dispute.created"}


def _open_dispute(stack: ProviderStack, provider: str, payment: pb.Payment) -> str:
    """The buyer's bank disputes the whole payment (the sandbox's admin route); its id."""
    base = stack.urls[provider]
    if provider == "paypal":
        order = paypal_client(base).orders.get_order({"id": payment.provider_payment_id}).body
        capture_id = order.purchase_units[0].payments.captures[0].id
        answer = httpx.post(
            f"{base}/_sandbox/captures/{capture_id}/dispute", json={"fee_minor": PAYPAL_FEE}
        )
        key = "dispute_id"
    else:
        answer = httpx.post(
            f"{base}/_sandbox/payments/{payment.provider_payment_id}/dispute", json={}
        )
        key = "id"
    assert answer.status_code == 200, answer.text
    return str(answer.json()[key])


def _move(stack: ProviderStack, provider: str, dispute_id: str) -> None:
    route, body = MOVE[provider]
    answer = httpx.post(f"{stack.urls[provider]}/_sandbox/disputes/{dispute_id}/{route}", json=body)
    assert answer.status_code == 200, answer.text


def _decide(stack: ProviderStack, provider: str, dispute_id: str, outcome: str) -> None:
    route, body = DECIDE[(provider, outcome)]
    answer = httpx.post(f"{stack.urls[provider]}/_sandbox/disputes/{dispute_id}/{route}", json=body)
    assert answer.status_code == 200, answer.text


async def _delivery(
    stack: ProviderStack, dispute_id: str, kind: str
) -> list[tuple[dict[str, str], bytes]]:
    """The signed webhook delivery of the dispute's `kind` event, as the sandbox sent it."""
    return await _nth_delivery(stack, dispute_id, kind, 1)


async def _disputes(stub: pb_grpc.PaymentsServiceStub, payment_id: str) -> list[tuple]:  # type: ignore[type-arg]
    got = await stub.GetPayment(pb.GetPaymentRequest(payment_id=payment_id))
    return [
        (d.dispute_id, d.status, d.amount.amount_minor, d.withdrawn_minor, d.reinstated_minor)
        for d in got.disputes
    ]


def _opened_money(provider: str, currency: str, fee: int) -> dict[str, dict[tuple[str, str], int]]:
    """The ledger after the dispute opened: PayPal holds the amount (and debits its fee) at
    once, Razorpay moves nothing until it is lost."""
    if provider == "razorpay":
        return _paid(provider, currency, fee)
    return {
        f"provider:{provider}:fees": {("PROVIDER_CLEARING", currency): -PAYPAL_FEE},
        f"provider:{provider}": {("PROVIDER_CLEARING", currency): PAYPAL_FEE},
    }


def _paid(provider: str, currency: str, fee: int) -> dict[str, dict[tuple[str, str], int]]:
    return {
        f"provider:{provider}": {("PROVIDER_CLEARING", currency): -fee},
        "platform": {("PLATFORM_REVENUE", currency): fee},
    }


@pytest.mark.parametrize("outcome", ["lost", "won"])
async def test_a_dispute_at_the_provider_is_recorded_and_booked_once_whatever_the_deliveries(
    provider_stack: ProviderStack,
    jobs_stub: pb_grpc.PaymentsServiceStub,
    provider: str,
    outcome: str,
) -> None:
    currency, fee = FEES[provider]
    clearing, fees = f"provider:{provider}", f"provider:{provider}:fees"
    ledger = Ledger(provider_stack, clearing, "platform", fees)
    payment = await _captured_fee(provider_stack, jobs_stub, provider)
    pid = payment.payment_id
    await ledger.settles_at(_paid(provider, currency, fee))

    dispute_id = _open_dispute(provider_stack, provider, payment)
    opened = await _delivery(provider_stack, dispute_id, OPENED_EVENT[provider])
    replies = await _deliver_at_once(jobs_stub, provider, opened, 10)
    assert sum(not r.duplicate for r in replies) == 1  # recorded once, nine duplicates
    held = fee if provider == "paypal" else 0
    assert await _disputes(jobs_stub, pid) == [(dispute_id, Status.NEEDS_RESPONSE, fee, held, 0)]
    await ledger.settles_at(_opened_money(provider, currency, fee))

    # Contested (under review), then decided; the two events ten times each, all at once, and
    # the opening one again: each re-fetches the decided dispute, the two new events take
    # turns on its row, and its money is booked once.
    _move(provider_stack, provider, dispute_id)
    review = await _delivery(provider_stack, dispute_id, MOVED_EVENT[provider])
    _decide(provider_stack, provider, dispute_id, outcome)
    decided = await _delivery(provider_stack, dispute_id, DECIDED_EVENT[(provider, outcome)])
    replies = await _deliver_at_once(jobs_stub, provider, review + decided + opened, 10)
    assert sum(not r.duplicate for r in replies) == 2
    got = (await jobs_stub.GetPayment(pb.GetPaymentRequest(payment_id=pid))).payment
    assert got.state == pb.Payment.State.CAPTURED  # a dispute moves money, not the state
    # PayPal's fee: an expense (its account goes below zero), paid from the clearing balance.
    paypal_fee = {fees: {("PROVIDER_CLEARING", currency): -PAYPAL_FEE}} if held else {}
    if outcome == "lost":
        assert await _disputes(jobs_stub, pid) == [(dispute_id, Status.LOST, fee, fee, 0)]
        # The money back to the customer: revenue returned to clearing; PayPal's fee an expense.
        wanted = dict(paypal_fee)
        if held:
            wanted[clearing] = {("PROVIDER_CLEARING", currency): PAYPAL_FEE}
        await ledger.settles_at(wanted)
        assert "payment.charged_back" in await _settlement_types(provider_stack, pid)
    else:
        assert await _disputes(jobs_stub, pid) == [(dispute_id, Status.WON, fee, held, held)]
        wanted = _paid(provider, currency, fee)
        if held:
            wanted[clearing] = {("PROVIDER_CLEARING", currency): -fee + PAYPAL_FEE}
        await ledger.settles_at({**wanted, **paypal_fee})
        assert "payment.charged_back" not in await _settlement_types(provider_stack, pid)

    async def clean() -> bool:
        return await _findings(jobs_stub) == {}

    await wait_for(clean, timeout=20)


# Where each provider's dispute is re-fetched from.
DISPUTE_PATHS = {"paypal": "/v1/customer/disputes/", "razorpay": "/v1/disputes/"}


async def test_a_dispute_the_provider_cannot_show_stores_nothing_and_is_applied_when_sent_again(
    provider_stack: ProviderStack, jobs_stub: pb_grpc.PaymentsServiceStub, provider: str
) -> None:
    """The re-fetch answered 503: the delivery is answered UNAVAILABLE (the provider sends it
    again), nothing is stored; sent again once the provider answers, it is applied once."""
    payment = await _captured_fee(provider_stack, jobs_stub, provider)
    dispute_id = _open_dispute(provider_stack, provider, payment)
    opened = await _delivery(provider_stack, dispute_id, OPENED_EVENT[provider])
    base = provider_stack.urls[provider]
    fault = {"kind": "error", "status": 503, "method": "GET"}
    async with httpx.AsyncClient() as http:
        armed = await http.post(
            f"{base}/_sandbox/faults", json={**fault, "path_prefix": DISPUTE_PATHS[provider]}
        )
        assert armed.status_code < 300, armed.text
        try:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _deliver_at_once(jobs_stub, provider, opened, 1)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert await _disputes(jobs_stub, payment.payment_id) == []
        finally:
            await http.delete(f"{base}/_sandbox/faults")
    replies = await _deliver_at_once(jobs_stub, provider, opened, 3)
    assert sum(not r.duplicate for r in replies) == 1
    [(found, status, *_)] = await _disputes(jobs_stub, payment.payment_id)
    assert (found, status) == (dispute_id, Status.NEEDS_RESPONSE)


# --- PayPal's money booked exactly: a fee changed, a refund in another currency, two payments --


def _paypal_admin(stack: ProviderStack, path: str, body: dict[str, object]) -> dict[str, object]:
    answer = httpx.post(f"{stack.urls['paypal']}/_sandbox{path}", json=body)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _capture_of(stack: ProviderStack, payment: pb.Payment) -> str:
    order = paypal_client(stack.urls["paypal"]).orders.get_order(
        {"id": payment.provider_payment_id}
    )
    return str(order.body.purchase_units[0].payments.captures[0].id)


async def _nth_delivery(
    stack: ProviderStack, dispute_id: str, kind: str, nth: int
) -> list[tuple[dict[str, str], bytes]]:
    """The `nth` (1-based) signed delivery of the dispute's `kind` event the sandbox sent."""

    def found() -> list[tuple[dict[str, str], bytes]]:
        return [
            (headers, body)
            for headers, body in list(stack.receiver.received)
            if dispute_id.encode() in body and f'"{kind}"'.encode() in body
        ]

    async def there() -> bool:
        return len(found()) >= nth

    await wait_for(there, timeout=20)
    return found()[nth - 1 : nth]


async def test_a_paypal_fee_changed_and_a_refund_in_another_currency_are_booked_exactly(
    provider_stack: ProviderStack, jobs_stub: pb_grpc.PaymentsServiceStub
) -> None:
    """PayPal raises its chargeback fee after it was booked: the difference is booked once
    (whatever the deliveries, the older event among them); then it resolves the dispute for
    the buyer with a refund in EUR of a USD payment: nothing is released on a guess (the
    release is not known in USD), the auditor stays clean."""
    currency, fee = FEES["paypal"]
    clearing, fees = "provider:paypal", "provider:paypal:fees"
    ledger = Ledger(provider_stack, clearing, "platform", fees)
    payment = await _captured_fee(provider_stack, jobs_stub, "paypal")
    pid = payment.payment_id
    await ledger.settles_at(_paid("paypal", currency, fee))
    capture = _capture_of(provider_stack, payment)
    dispute_id = str(
        _paypal_admin(provider_stack, f"/captures/{capture}/dispute", {"fee_minor": PAYPAL_FEE})[
            "dispute_id"
        ]
    )
    opened = await _nth_delivery(provider_stack, dispute_id, "CUSTOMER.DISPUTE.CREATED", 1)
    await _deliver_at_once(jobs_stub, "paypal", opened, 3)
    await ledger.settles_at(_opened_money("paypal", currency, fee))

    raised = PAYPAL_FEE + 500
    _paypal_admin(provider_stack, f"/disputes/{dispute_id}/update", {"fee_minor": raised})
    updated = await _nth_delivery(provider_stack, dispute_id, "CUSTOMER.DISPUTE.UPDATED", 1)
    replies = await _deliver_at_once(jobs_stub, "paypal", updated + opened, 5)
    assert sum(not r.duplicate for r in replies) == 1  # the update, once; the opening again
    await ledger.settles_at(
        {
            fees: {("PROVIDER_CLEARING", currency): -raised},
            clearing: {("PROVIDER_CLEARING", currency): raised},
        }
    )

    _paypal_admin(
        provider_stack,
        f"/disputes/{dispute_id}/resolve",
        {
            "outcome": "RESOLVED_BUYER_FAVOUR",
            "amount_refunded_minor": 4_900,
            "amount_refunded_currency": "EUR",
        },
    )
    resolved = await _nth_delivery(provider_stack, dispute_id, "CUSTOMER.DISPUTE.RESOLVED", 1)
    await _deliver_at_once(jobs_stub, "paypal", resolved, 5)
    assert await _disputes(jobs_stub, pid) == [(dispute_id, Status.LOST, fee, fee, 0)]
    # The hold stays taken and the raised fee paid: no 100.00 USD released from 49.00 EUR.
    await ledger.settles_at(
        {
            fees: {("PROVIDER_CLEARING", currency): -raised},
            clearing: {("PROVIDER_CLEARING", currency): raised},
        }
    )

    async def clean() -> bool:
        return await _findings(jobs_stub) == {}

    await wait_for(clean, timeout=20)


async def test_a_paypal_dispute_of_two_payments_books_each_its_exact_share_once(
    provider_stack: ProviderStack, jobs_stub: pb_grpc.PaymentsServiceStub
) -> None:
    """One PayPal dispute of the captures of two orders (two of Hirepay's payments), of all but
    one cent of them: each payment is recorded and booked its share, pro rata to the captures'
    gross amounts by largest remainder (149.00 and 148.99; the 20.01 fee 10.01 and 10.00), once
    whatever the deliveries (each ten times at once); resolved for the buyer with 100.00
    refunded, the 197.99 released is split by the shares (99.00 and 98.99). Balances to the
    cent, the auditor clean."""
    currency, fee = FEES["paypal"]
    clearing, fees = "provider:paypal", "provider:paypal:fees"
    ledger = Ledger(provider_stack, clearing, "platform", fees)
    first = await _captured_fee(provider_stack, jobs_stub, "paypal")
    second = await _captured_fee(provider_stack, jobs_stub, "paypal")
    await ledger.settles_at(
        {
            clearing: {("PROVIDER_CLEARING", currency): -2 * fee},
            "platform": {("PLATFORM_REVENUE", currency): 2 * fee},
        }
    )
    disputed, dispute_fee = 2 * fee - 1, 2_001
    dispute_id = str(
        _paypal_admin(
            provider_stack,
            f"/captures/{_capture_of(provider_stack, first)}/dispute",
            {
                "amount_minor": disputed,
                "fee_minor": dispute_fee,
                "also_captures": [_capture_of(provider_stack, second)],
            },
        )["dispute_id"]
    )
    opened = await _nth_delivery(provider_stack, dispute_id, "CUSTOMER.DISPUTE.CREATED", 1)
    replies = await _deliver_at_once(jobs_stub, "paypal", opened, 10)
    assert sum(not r.duplicate for r in replies) == 1
    assert sum(r.applied for r in replies) == 1
    assert await _disputes(jobs_stub, first.payment_id) == [
        (dispute_id, Status.NEEDS_RESPONSE, fee, fee, 0)
    ]
    assert await _disputes(jobs_stub, second.payment_id) == [
        (dispute_id, Status.NEEDS_RESPONSE, fee - 1, fee - 1, 0)
    ]
    await ledger.settles_at(
        {
            clearing: {("PROVIDER_CLEARING", currency): -1 + dispute_fee},
            "platform": {("PLATFORM_REVENUE", currency): 1},
            fees: {("PROVIDER_CLEARING", currency): -dispute_fee},
        }
    )

    _paypal_admin(
        provider_stack,
        f"/disputes/{dispute_id}/resolve",
        {"outcome": "RESOLVED_BUYER_FAVOUR", "amount_refunded_minor": 10_000},
    )
    resolved = await _nth_delivery(provider_stack, dispute_id, "CUSTOMER.DISPUTE.RESOLVED", 1)
    replies = await _deliver_at_once(jobs_stub, "paypal", resolved + opened, 10)
    assert sum(not r.duplicate for r in replies) == 1
    assert await _disputes(jobs_stub, first.payment_id) == [
        (dispute_id, Status.LOST, fee, fee, 9_900)
    ]
    assert await _disputes(jobs_stub, second.payment_id) == [
        (dispute_id, Status.LOST, fee - 1, fee - 1, 9_899)
    ]
    released = disputed - 10_000
    await ledger.settles_at(
        {
            clearing: {("PROVIDER_CLEARING", currency): -1 - released + dispute_fee},
            "platform": {("PLATFORM_REVENUE", currency): 1 + released},
            fees: {("PROVIDER_CLEARING", currency): -dispute_fee},
        }
    )
    # Lost in part for each payment: no posting is ended by it.
    for payment in (first, second):
        assert "payment.charged_back" not in await _settlement_types(
            provider_stack, payment.payment_id
        )

    async def clean() -> bool:
        return await _findings(jobs_stub) == {}

    await wait_for(clean, timeout=20)


async def test_a_paypal_dispute_of_two_payments_naming_its_items_is_split_as_paypal_says(
    provider_stack: ProviderStack, jobs_stub: pb_grpc.PaymentsServiceStub
) -> None:
    """The disputed transactions name their items' disputed amounts (30.00 of the first, 100.00
    of the second): each payment's share is its items' (not pro rata, which would be 65.00
    each); won, each share is released whole. Every delivery five times at once."""
    currency, fee = FEES["paypal"]
    clearing, fees = "provider:paypal", "provider:paypal:fees"
    ledger = Ledger(provider_stack, clearing, "platform", fees)
    first = await _captured_fee(provider_stack, jobs_stub, "paypal")
    second = await _captured_fee(provider_stack, jobs_stub, "paypal")
    paid = {
        clearing: {("PROVIDER_CLEARING", currency): -2 * fee},
        "platform": {("PLATFORM_REVENUE", currency): 2 * fee},
    }
    await ledger.settles_at(paid)
    dispute_id = str(
        _paypal_admin(
            provider_stack,
            f"/captures/{_capture_of(provider_stack, first)}/dispute",
            {
                "items_minor": [3_000, 10_000],
                "also_captures": [_capture_of(provider_stack, second)],
            },
        )["dispute_id"]
    )
    opened = await _nth_delivery(provider_stack, dispute_id, "CUSTOMER.DISPUTE.CREATED", 1)
    replies = await _deliver_at_once(jobs_stub, "paypal", opened, 5)
    assert sum(not r.duplicate for r in replies) == 1
    assert await _disputes(jobs_stub, first.payment_id) == [
        (dispute_id, Status.NEEDS_RESPONSE, 3_000, 3_000, 0)
    ]
    assert await _disputes(jobs_stub, second.payment_id) == [
        (dispute_id, Status.NEEDS_RESPONSE, 10_000, 10_000, 0)
    ]
    await ledger.settles_at(
        {
            clearing: {("PROVIDER_CLEARING", currency): -2 * fee + 13_000},
            "platform": {("PLATFORM_REVENUE", currency): 2 * fee - 13_000},
        }
    )
    _decide(provider_stack, "paypal", dispute_id, "won")
    resolved = await _nth_delivery(provider_stack, dispute_id, "CUSTOMER.DISPUTE.RESOLVED", 1)
    replies = await _deliver_at_once(jobs_stub, "paypal", resolved, 5)
    assert sum(not r.duplicate for r in replies) == 1
    assert await _disputes(jobs_stub, second.payment_id) == [
        (dispute_id, Status.WON, 10_000, 10_000, 10_000)
    ]
    await ledger.settles_at(paid)

    async def clean() -> bool:
        return await _findings(jobs_stub) == {}

    await wait_for(clean, timeout=20)
