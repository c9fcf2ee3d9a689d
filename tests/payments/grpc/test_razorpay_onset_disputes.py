"""Razorpay disputes deducted at onset (Razorpay's DAO), end to end (ESC-1 every cent, API-3,
API-4, CR-2, PAY-4, PAY-15): the Razorpay sandbox opens the dispute with the disputed amount
deducted at once and decides it, sending the real signed `payment.dispute.*` webhooks; the real
payments process on PostgreSQL re-fetches the dispute through the official SDK and books, on the
real wallet, the deduction when the dispute opens (`<dispute>:deducted`) and its reversal when
it is won (`<dispute>:reversed`), each once: every delivery ten times at once, the decision
delivered before the events it follows, the opening again with them. Won: two bookings, net
zero; lost: the one deduction, nothing more (and jobs told `payment.charged_back` once). For a
posting fee and for a plan purchase (the same handler); balances asserted to the cent, credits
to the unit, the ledger auditor clean."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hirepay.payments.v1 import payments_service_pb2 as pb
from hirepay.payments.v1 import payments_service_pb2_grpc as pb_grpc
from hirepay_dev.pg import libpq_url
from tests.payments.grpc import test_provider_refunds_paypal_razorpay as refunds
from tests.payments.grpc.test_provider_disputes_paypal_razorpay import _delivery, _disputes
from tests.payments.grpc.test_provider_refunds_paypal_razorpay import (
    FEES,
    ProviderStack,
    _captured_fee,
    _deliver_at_once,
    _id,
    _settlement_types,
)
from tests.payments.grpc.test_purchase_disputes_paypal_razorpay import (
    CANDIDATES,
    JOBS,
    PRICES,
    _paid_purchase,
    _transaction,
)
from tests.payments.ledger.test_ledger_bookings import Ledger, _findings, _transfer
from tests.support.waiting import wait_for

# The refund tests' stack (PayPal and Razorpay sandboxes, payments, wallet) and its stub.
provider_stack, jobs_stub = refunds.provider_stack, refunds.jobs_stub
Status = pb.PaymentDispute.Status
CLEARING, FEES_ACCOUNT = "provider:razorpay", "provider:razorpay:fees"
DECIDED = {"won": "payment.dispute.won", "lost": "payment.dispute.lost"}


def _open_at_onset(stack: ProviderStack, payment_id: str) -> str:
    """The buyer's bank disputes the whole payment and Razorpay deducts it at once; its id."""
    answer = httpx.post(
        f"{stack.urls['razorpay']}/_sandbox/payments/{payment_id}/dispute",
        json={"deduct_at_onset": True},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["amount_deducted"] == answer.json()["amount"]
    return str(answer.json()["id"])


def _step(stack: ProviderStack, dispute_id: str, to: str) -> None:
    answer = httpx.post(
        f"{stack.urls['razorpay']}/_sandbox/disputes/{dispute_id}/step", json={"to": to}
    )
    assert answer.status_code == 200, answer.text


def _admin(stack: ProviderStack, path: str, body: dict[str, object]) -> httpx.Response:
    """A Razorpay sandbox admin route's answer."""
    return httpx.post(f"{stack.urls['razorpay']}/_sandbox{path}", json=body)


async def _column(stack: ProviderStack, sql: str, arg: str) -> list[str]:
    """The first column of a query of the payments database."""
    conn = await asyncpg.connect(libpq_url(stack.payments_db))
    try:
        return [r[0] for r in await conn.fetch(sql, arg)]
    finally:
        await conn.close()


async def _dispute_bookings(stack: ProviderStack, owner_id: str) -> list[str]:
    """The dispute bookings recorded for a payment (or a purchase's transaction)."""
    return await _column(
        stack,
        "SELECT id FROM credit_grants WHERE kind = 'dispute'"
        " AND (payment_id = $1 OR transaction_id = $1) ORDER BY id",
        owner_id,
    )


async def _booked_by_audit(stack: ProviderStack, dispute_id: str) -> list[str]:
    """The transfer ids the dispute's audit entries say each applied event owed (PAY-15)."""
    owed = await _column(
        stack,
        "SELECT details->>'transfer_ids' FROM audit_log WHERE action = 'webhook'"
        " AND details->>'object_id' = $1 AND details ? 'transfer_ids' ORDER BY id",
        dispute_id,
    )
    return [i for ids in owed for i in ids.split(",")]


def _metrics(stack: ProviderStack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The payments process's dispute counters, as Prometheus scrapes them (OPS-1)."""
    text = httpx.get(f"http://127.0.0.1:{stack.payments.metrics_port}/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("hirepay_payment_disput") and s.name.endswith("_total")
    }


def _counted(
    before: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    after: dict[tuple[str, tuple[tuple[str, str], ...]], float],
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


async def _decided_out_of_order(
    stack: ProviderStack,
    stub: pb_grpc.PaymentsServiceStub,
    dispute_id: str,
    outcome: str,
    opened: list[tuple[dict[str, str], bytes]],
) -> None:
    """Contested then decided at Razorpay; the decision delivered first (ten times at once),
    then the review and the opening (ten times each, all at once): two new events, the rest
    duplicates."""
    _step(stack, dispute_id, "under_review")
    review = await _delivery(stack, dispute_id, "payment.dispute.under_review")
    _step(stack, dispute_id, outcome)
    decided = await _delivery(stack, dispute_id, DECIDED[outcome])
    first = await _deliver_at_once(stub, "razorpay", decided, 10)
    rest = await _deliver_at_once(stub, "razorpay", review + opened, 10)
    assert sum(not r.duplicate for r in first) == 1
    assert sum(not r.duplicate for r in rest) == 1  # the review, once; the opening repeated


async def _clean(stub: pb_grpc.PaymentsServiceStub) -> None:
    async def clean() -> bool:
        return await _findings(stub) == {}

    await wait_for(clean, timeout=20)


@pytest.mark.parametrize("outcome", ["won", "lost"])
async def test_a_posting_fee_deducted_at_onset_is_booked_once_then_reversed_if_won(
    provider_stack: ProviderStack, jobs_stub: pb_grpc.PaymentsServiceStub, outcome: str
) -> None:
    currency, fee = FEES["razorpay"]
    ledger = Ledger(provider_stack, CLEARING, "platform", FEES_ACCOUNT)
    payment = await _captured_fee(provider_stack, jobs_stub, "razorpay")
    pid = payment.payment_id
    paid = {
        CLEARING: {("PROVIDER_CLEARING", currency): -fee},
        "platform": {("PLATFORM_REVENUE", currency): fee},
    }
    await ledger.settles_at(paid)

    counters = _metrics(provider_stack)
    dispute_id = _open_at_onset(provider_stack, payment.provider_payment_id)
    opened = await _delivery(provider_stack, dispute_id, "payment.dispute.created")
    replies = await _deliver_at_once(jobs_stub, "razorpay", opened, 10)
    assert sum(not r.duplicate for r in replies) == 1
    # Deducted as it opens: the fee back out of revenue into clearing, at once, once.
    assert await _disputes(jobs_stub, pid) == [(dispute_id, Status.NEEDS_RESPONSE, fee, fee, 0)]
    await ledger.settles_at({})
    deducted = f"payment:{pid}:dispute:{dispute_id}:deducted"
    assert await _transfer(provider_stack, deducted) is not None
    assert len(await _dispute_bookings(provider_stack, pid)) == 1

    await _decided_out_of_order(provider_stack, jobs_stub, dispute_id, outcome, opened)
    got = (await jobs_stub.GetPayment(pb.GetPaymentRequest(payment_id=pid))).payment
    assert got.state == pb.Payment.State.CAPTURED  # a dispute moves money, not the state
    reversed_ = f"payment:{pid}:dispute:{dispute_id}:reversed"
    if outcome == "won":
        # The deduction given back: net zero, two bookings.
        assert await _disputes(jobs_stub, pid) == [(dispute_id, Status.WON, fee, fee, fee)]
        await ledger.settles_at(paid)
        assert await _transfer(provider_stack, reversed_) is not None
        assert len(await _dispute_bookings(provider_stack, pid)) == 2
        assert "payment.charged_back" not in await _settlement_types(provider_stack, pid)
    else:
        # Lost: the onset deduction was the money; nothing more moves, jobs is told once.
        assert await _disputes(jobs_stub, pid) == [(dispute_id, Status.LOST, fee, fee, 0)]
        await ledger.settles_at({})
        assert await _transfer(provider_stack, reversed_) is None
        assert len(await _dispute_bookings(provider_stack, pid)) == 1
        assert "payment.charged_back" in await _settlement_types(provider_stack, pid)
    # Audited and counted once per step, never per delivery.
    owed = [deducted, reversed_] if outcome == "won" else [deducted]
    assert await _booked_by_audit(provider_stack, dispute_id) == owed
    assert _counted(counters, _metrics(provider_stack)) == {
        (
            "hirepay_payment_disputes_opened_total",
            (("provider", "razorpay"), ("reason", "chargeback")),
        ): 1.0,
        (
            "hirepay_payment_disputes_closed_total",
            (("outcome", outcome), ("provider", "razorpay")),
        ): 1.0,
        ("hirepay_payment_disputed_minor_total", (("currency", currency),)): float(fee),
    }
    await _clean(jobs_stub)


@pytest.mark.parametrize("outcome", ["won", "lost"])
async def test_a_plan_purchase_deducted_at_onset_keeps_its_credits_if_won_and_is_refunded_if_lost(
    provider_stack: ProviderStack, jobs_stub: pb_grpc.PaymentsServiceStub, outcome: str
) -> None:
    currency, price = PRICES["razorpay"]
    company = _id("company")
    ledger = Ledger(provider_stack, CLEARING, "platform", FEES_ACCOUNT, company)
    txn_id, paid_with = await _paid_purchase(provider_stack, jobs_stub, "razorpay", company)
    issued = {("ISSUANCE", "JOB_CREDIT"): -JOBS, ("ISSUANCE", "CANDIDATE_CREDIT"): -CANDIDATES}
    credits = {("USER", "JOB_CREDIT"): JOBS, ("USER", "CANDIDATE_CREDIT"): CANDIDATES}
    paid = {
        CLEARING: {("PROVIDER_CLEARING", currency): -price},
        "platform": {("PLATFORM_REVENUE", currency): price, **issued},
        company: credits,
    }
    await ledger.settles_at(paid)

    dispute_id = _open_at_onset(provider_stack, paid_with)
    opened = await _delivery(provider_stack, dispute_id, "payment.dispute.created")
    replies = await _deliver_at_once(jobs_stub, "razorpay", opened, 10)
    assert sum(not r.duplicate for r in replies) == 1
    got = await _transaction(jobs_stub, txn_id)
    [shown] = got.disputes
    assert (shown.status, shown.withdrawn_minor, shown.reinstated_minor) == (
        Status.NEEDS_RESPONSE,
        price,
        0,
    )
    # Open: the price taken back out of revenue, the purchase still SUCCESS with its credits.
    assert got.transaction.status == pb.Transaction.SUCCESS
    await ledger.settles_at({"platform": issued, company: credits})
    assert len(await _dispute_bookings(provider_stack, txn_id)) == 1

    await _decided_out_of_order(provider_stack, jobs_stub, dispute_id, outcome, opened)
    got = await _transaction(jobs_stub, txn_id)
    [shown] = got.disputes
    if outcome == "won":
        assert (shown.status, shown.withdrawn_minor, shown.reinstated_minor) == (
            Status.WON,
            price,
            price,
        )
        assert got.transaction.status == pb.Transaction.SUCCESS
        await ledger.settles_at(paid)  # the price back in revenue, the credits kept
        assert len(await _dispute_bookings(provider_stack, txn_id)) == 2
    else:
        assert (shown.status, shown.withdrawn_minor, shown.reinstated_minor) == (
            Status.LOST,
            price,
            0,
        )
        assert got.transaction.status == pb.Transaction.REFUNDED
        await ledger.settles_at({})  # the price with the buyer once, the credits revoked
        assert len(await _dispute_bookings(provider_stack, txn_id)) == 1
    # On the purchase's audit trail: each movement owed once.
    moved = [f"payment:{txn_id}:dispute:{dispute_id}:{m}" for m in ("deducted", "reversed")]
    assert await _booked_by_audit(provider_stack, dispute_id) == (
        moved if outcome == "won" else moved[:1]
    )
    await _clean(jobs_stub)


async def test_a_fee_deducted_at_onset_and_a_partial_reversal_are_booked_exactly_once(
    provider_stack: ProviderStack, jobs_stub: pb_grpc.PaymentsServiceStub
) -> None:
    """Razorpay deducts the disputed amount with its fee at onset (`amount_deducted` is both)
    in a pre-arbitration; won in part, it reverses 300.00 of the 500.00: the fee is booked into
    the fees account (never taken from the customer's payment), the partial reversal back to
    revenue, each once whatever the deliveries (ten at once, the decision first, the opening
    again after it); the network's escalation fee Razorpay does not show is named and counted
    once. Balances to the paisa, the auditor clean."""
    currency, fee = FEES["razorpay"]
    ledger = Ledger(provider_stack, CLEARING, "platform", FEES_ACCOUNT)
    payment = await _captured_fee(provider_stack, jobs_stub, "razorpay")
    pid = payment.payment_id
    await ledger.settles_at(
        {
            CLEARING: {("PROVIDER_CLEARING", currency): -fee},
            "platform": {("PLATFORM_REVENUE", currency): fee},
        }
    )
    counters = _metrics(provider_stack)
    dispute_fee, back = 1_180, 30_000
    answer = _admin(
        provider_stack,
        f"/payments/{payment.provider_payment_id}/dispute",
        {"deduct_at_onset": True, "fee": dispute_fee, "phase": "pre_arbitration"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["amount_deducted"] == fee + dispute_fee
    dispute_id = str(answer.json()["id"])
    opened = await _delivery(provider_stack, dispute_id, "payment.dispute.created")
    replies = await _deliver_at_once(jobs_stub, "razorpay", opened, 10)
    assert sum(not r.duplicate for r in replies) == 1
    assert await _disputes(jobs_stub, pid) == [(dispute_id, Status.NEEDS_RESPONSE, fee, fee, 0)]
    # The fee paid from clearing into the fees account; the disputed money back to clearing.
    await ledger.settles_at(
        {
            CLEARING: {("PROVIDER_CLEARING", currency): dispute_fee},
            FEES_ACCOUNT: {("PROVIDER_CLEARING", currency): -dispute_fee},
        }
    )

    step = f"/disputes/{dispute_id}/step"
    too_much = _admin(provider_stack, step, {"to": "won", "reversed_amount": fee + 1})
    assert too_much.status_code == 409, too_much.text  # the admin route: refused
    won = _admin(provider_stack, step, {"to": "won", "reversed_amount": back})
    assert won.status_code == 200, won.text
    assert (won.json()["amount_deducted"], won.json()["amount_reversed"]) == (
        fee + dispute_fee,
        back,
    )
    decided = await _delivery(provider_stack, dispute_id, "payment.dispute.won")
    first = await _deliver_at_once(jobs_stub, "razorpay", decided, 10)
    again = await _deliver_at_once(jobs_stub, "razorpay", opened, 10)
    assert sum(not r.duplicate for r in first) == 1 and not any(not r.duplicate for r in again)
    assert await _disputes(jobs_stub, pid) == [(dispute_id, Status.WON, fee, fee, back)]
    await ledger.settles_at(
        {
            CLEARING: {("PROVIDER_CLEARING", currency): dispute_fee - back},
            "platform": {("PLATFORM_REVENUE", currency): back},
            FEES_ACCOUNT: {("PROVIDER_CLEARING", currency): -dispute_fee},
        }
    )
    moved = [f"payment:{pid}:dispute:{dispute_id}:{m}" for m in ("deducted", "reversed")]
    assert await _booked_by_audit(provider_stack, dispute_id) == moved
    assert sorted(await _dispute_bookings(provider_stack, pid)) == sorted(
        f"dispute:{dispute_id}:{m}" for m in ("deducted", "reversed")
    )
    assert "payment.charged_back" not in await _settlement_types(provider_stack, pid)
    counted = _counted(counters, _metrics(provider_stack))
    unbooked = (
        "hirepay_payment_dispute_money_unbooked_total",
        (("provider", "razorpay"), ("why", "network_fee")),
    )
    assert counted[unbooked] == 1.0
    await _clean(jobs_stub)
