"""Refunds made at the provider, outside Hirepay (a Stripe dashboard refund), arriving by webhook
(ESC-1, API-4, PAY-15), against the in-memory fakes: each is re-fetched, recorded once per
provider refund id and booked exactly like Hirepay's own refunds (balances asserted on the fake
ledger); partial and full; redeliveries and twins change nothing; a refund Hirepay made itself
is never booked twice, even when its event arrives before its answer is recorded; a coin
purchase's coins are taken back, or recorded short when spent."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from hirepay_platform.errors import Unavailable
from hirepay_platform.tcc import TccBranch
from payments.domain import commands, errors
from payments.domain.credits import CreditGrant
from payments.domain.events import EventType
from payments.domain.model import Method, PaymentState
from payments.domain.provider import (
    EventSubject,
    OutcomeUnknown,
    ProviderEvent,
    ProviderPayment,
    ProviderRefund,
    ProviderStatus,
    RefundState,
)
from payments.domain.refunds import CoinsState, RefundStatus
from payments.domain.transactions import TxnStatus
from payments.service_layer import metrics
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import authorize, capture, credits, refund, void
from payments.service_layer.handlers.poller import poll_due
from payments.service_layer.handlers.webhooks import handle_provider_event
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import Clock, FakeLedger, FakeProvider, FakeUnitOfWork
from tests.support.payments_helpers import paid_plan_transaction

OWNER = "co-1"
FEE = 14_900
CLEARING, PLATFORM = ("provider:stripe", "USD"), ("platform", "USD")


class EventfulProvider(FakeProvider):
    """The fake provider, whose webhook deliveries are JSON naming the event (trusted here: the
    signature checks are the adapter's own tests)."""

    async def verify_event(self, payload: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        body = json.loads(payload)
        return ProviderEvent(
            id=body["id"],
            type=body["type"],
            created=datetime.now(UTC),
            subject=EventSubject.REFUND,
            object_id=body["object"],
            metadata=body.get("metadata", {}),
            payment_id=body["payment_intent"],
            body=body,
        )


@pytest.fixture
def deps() -> Deps:
    return Deps(
        FakeUnitOfWork(),
        ProviderRegistry([EventfulProvider()]),
        Policy(grant_retry_base=1, grant_retry_max=4),
        clock=Clock(),
        ledger=FakeLedger(),
    )


def _provider(deps: Deps) -> EventfulProvider:
    provider = deps.providers.of_existing("stripe")
    assert isinstance(provider, EventfulProvider)
    return provider


def _wallet(deps: Deps) -> FakeLedger:
    assert isinstance(deps.ledger, FakeLedger)
    return deps.ledger


def _moved(deps: Deps) -> dict[tuple[str, str], int]:
    return {k: v for k, v in _wallet(deps).balances.items() if v}


async def _captured(deps: Deps, gtx: str, metadata: dict[str, str] | None = None) -> str:
    branch = TccBranch(gtx, "payment")
    meta = metadata if metadata is not None else {"subsystem": "jobs"}
    await authorize(
        commands.Authorize(
            f"a-{gtx}", branch, OWNER, FEE, "USD", Method.CARD, "pm_card_visa", metadata=meta
        ),
        deps,
    )
    result = await capture(commands.Capture(f"c-{gtx}", branch), deps)
    assert result.payment is not None and result.payment.state is PaymentState.CAPTURED
    await credits.settle_due_grants(deps)
    return result.payment.id


async def _intent(deps: Deps, payment_id: str) -> str:
    async with deps.uow as uow:
        p = await uow.payments.get(payment_id)
    assert p is not None
    return p.provider_payment_id


async def _deliver(deps: Deps, event_id: str, pi: str, event_type: str = "charge.refunded"):
    payload = {"id": event_id, "type": event_type, "object": f"ch_{pi}", "payment_intent": pi}
    return await handle_provider_event(
        commands.ProviderEventDelivery("stripe", json.dumps(payload).encode()), deps
    )


async def _state(deps: Deps, payment_id: str):
    async with deps.uow as uow:
        p = await uow.payments.get(payment_id)
        refunds = await uow.refunds.list_for_payment(payment_id)
        audit = await uow.audit.list_for_payment(payment_id)
    assert p is not None
    return p, refunds, audit


def _refunded_events(deps: Deps, payment_id: str) -> list[str]:
    assert isinstance(deps.uow, FakeUnitOfWork)
    return [
        e.payment.state.value
        for e in deps.uow.committed.outbox
        if e.type is EventType.PAYMENT_REFUNDED and e.payment and e.payment.id == payment_id
    ]


async def test_a_dashboard_refund_in_full_is_booked_and_refunds_the_payment(deps: Deps) -> None:
    pid = await _captured(deps, "g1")
    assert _moved(deps) == {CLEARING: -FEE, PLATFORM: FEE}
    pi = await _intent(deps, pid)
    re_id = _provider(deps).refund_outside(pi, FEE)
    booked = metrics.PROVIDER_REFUNDS.labels("stripe", "booked")._value.get()
    outcome = await _deliver(deps, "evt_1", pi)
    assert outcome.applied and not outcome.duplicate
    p, refunds, audit = await _state(deps, pid)
    assert (p.state, p.refunded_minor, p.refundable_minor) == (PaymentState.REFUNDED, FEE, 0)
    [ref] = refunds
    assert (ref.status, ref.provider_refund_id, ref.amount_minor) == (
        RefundStatus.SUCCEEDED,
        re_id,
        FEE,
    )
    assert ref.made_at_provider and ref.reason == "refunded_at_provider"
    assert _refunded_events(deps, pid) == ["REFUNDED"]  # the subsystem hears it (jobs)
    await credits.settle_due_grants(deps)
    assert _moved(deps) == {}  # revenue back to clearing: captured fees minus refunds = 0
    assert any(e.action == "refund" and e.actor == "provider" for e in audit)
    assert any(e.action == "webhook" and e.details["event_id"] == "evt_1" for e in audit)
    assert metrics.PROVIDER_REFUNDS.labels("stripe", "booked")._value.get() == booked + 1


async def test_partial_dashboard_refunds_follow_the_refundable_amount(deps: Deps) -> None:
    pid = await _captured(deps, "g2")
    pi = await _intent(deps, pid)
    _provider(deps).refund_outside(pi, 4_900, reason="requested_by_customer")
    await _deliver(deps, "evt_1", pi)
    p, refunds, _ = await _state(deps, pid)
    assert (p.state, p.refundable_minor) == (PaymentState.PARTIALLY_REFUNDED, 10_000)
    assert refunds[0].reason == "requested_by_customer"
    await credits.settle_due_grants(deps)
    assert _moved(deps) == {CLEARING: -10_000, PLATFORM: 10_000}
    # Hirepay refunds no more than what is left ...
    with pytest.raises(errors.RefundExceedsCaptured):
        await refund(commands.Refund("r-1", pid, 10_001), deps)
    await refund(commands.Refund("r-1", pid, 0), deps)
    # ... and its own refund's event books nothing more.
    await _deliver(deps, "evt_2", pi)
    p, refunds, _ = await _state(deps, pid)
    assert p.state is PaymentState.REFUNDED and len(refunds) == 2
    await credits.settle_due_grants(deps)
    assert _moved(deps) == {}


async def test_redelivered_and_twin_events_book_once(deps: Deps) -> None:
    pid = await _captured(deps, "g3")
    pi = await _intent(deps, pid)
    _provider(deps).refund_outside(pi, 900)
    first = await _deliver(deps, "evt_1", pi)
    again = await _deliver(deps, "evt_1", pi)  # the same event delivered again
    twin = await _deliver(deps, "evt_2", pi, "refund.updated")  # another event, same refund
    assert (first.applied, again.duplicate, twin.applied, twin.duplicate) == (
        True,
        True,
        False,
        False,
    )
    p, refunds, _ = await _state(deps, pid)
    assert p.refunded_minor == 900 and len(refunds) == 1
    assert _refunded_events(deps, pid) == ["PARTIALLY_REFUNDED"]
    await credits.settle_due_grants(deps)
    assert _moved(deps) == {CLEARING: -(FEE - 900), PLATFORM: FEE - 900}


async def test_hirepays_own_refund_is_not_booked_again_by_its_event(deps: Deps) -> None:
    pid = await _captured(deps, "g4")
    pi = await _intent(deps, pid)
    done = await refund(commands.Refund("r-1", pid, 0), deps)
    own = metrics.PROVIDER_REFUNDS.labels("stripe", "own")._value.get()
    outcome = await _deliver(deps, "evt_1", pi)
    assert not outcome.applied
    p, refunds, _ = await _state(deps, pid)
    assert [r.id for r in refunds] == [done.refund.id] and p.refunded_minor == FEE
    assert metrics.PROVIDER_REFUNDS.labels("stripe", "own")._value.get() == own + 1
    await credits.settle_due_grants(deps)
    assert _moved(deps) == {}


async def test_an_event_before_hirepays_refund_answer_is_recorded_books_once(deps: Deps) -> None:
    """The provider refunded, its answer was lost (the refund stays PENDING, unknown) and the
    event arrives first: matched by the refund's `hirepay_refund_id`, it is left to the refund's
    own path (the poller replays the call with its key), which books it once."""
    pid = await _captured(deps, "g5")
    pi = await _intent(deps, pid)
    _provider(deps).script = [("after", OutcomeUnknown("lost", timeout=True))]
    with pytest.raises(errors.PaymentTimeout):
        await refund(commands.Refund("r-1", pid, 0), deps)
    assert not (await _deliver(deps, "evt_1", pi)).applied
    _, refunds, _ = await _state(deps, pid)
    assert [r.status for r in refunds] == [RefundStatus.PENDING]
    clock = deps.clock
    assert isinstance(clock, Clock)
    clock.advance(120)
    await poll_due(deps)
    p, refunds, _ = await _state(deps, pid)
    assert [r.status for r in refunds] == [RefundStatus.SUCCEEDED]
    assert (p.state, p.refunded_minor) == (PaymentState.REFUNDED, FEE)
    await _deliver(deps, "evt_2", pi)
    await credits.settle_due_grants(deps)
    assert _moved(deps) == {}


async def test_an_event_about_a_capture_not_recorded_yet_is_retried(deps: Deps) -> None:
    branch = TccBranch("g6", "payment")
    await authorize(
        commands.Authorize("a-g6", branch, OWNER, FEE, "USD", Method.CARD, "pm_card_visa"), deps
    )
    async with deps.uow as uow:
        p = await uow.payments.get_by_branch(branch)
    assert p is not None
    with pytest.raises(errors.EventNotApplicableYet):
        await _deliver(deps, "evt_1", p.provider_payment_id)
    assert isinstance(deps.uow, FakeUnitOfWork)
    assert "evt_1" not in deps.uow.committed.events  # not stored: delivered again later


async def test_a_refund_of_a_voided_payment_is_recorded_never_retried_nor_booked(
    deps: Deps,
) -> None:
    """A provider without a void refunds the authorization Hirepay let go by itself (Razorpay's
    auto-refund, refund.processed): nothing was taken, so nothing is booked, and the event is
    recorded rather than refused for ever as "not captured yet"."""
    branch = TccBranch("g6v", "payment")
    await authorize(
        commands.Authorize("a-g6v", branch, OWNER, FEE, "USD", Method.CARD, "pm_card_visa"), deps
    )
    voided = await void(commands.Void("v-g6v", branch), deps)
    assert voided.payment is not None and voided.payment.state is PaymentState.VOIDED
    pid, pi = voided.payment.id, voided.payment.provider_payment_id
    _provider(deps).refunds[pi] = [ProviderRefund("re_auto", RefundState.SUCCEEDED, FEE)]
    before = metrics.PROVIDER_REFUNDS.labels("stripe", "not_captured")._value.get()
    outcome = await _deliver(deps, "evt_1", pi, "refund.processed")
    assert not outcome.applied and not outcome.duplicate
    assert metrics.PROVIDER_REFUNDS.labels("stripe", "not_captured")._value.get() == before + 1
    p, refunds, _ = await _state(deps, pid)
    assert (p.state, p.refunded_minor, refunds) == (PaymentState.VOIDED, 0, [])
    assert isinstance(deps.uow, FakeUnitOfWork)
    assert deps.uow.committed.events == {"evt_1": False}  # recorded: never delivered again
    assert (await _deliver(deps, "evt_1", pi, "refund.processed")).duplicate
    await credits.settle_due_grants(deps)
    assert _moved(deps) == {}


async def test_an_event_about_a_payment_hirepay_never_made_is_only_recorded(deps: Deps) -> None:
    outcome = await _deliver(deps, "evt_1", "pi_elsewhere")
    assert not outcome.applied and not outcome.duplicate
    assert isinstance(deps.uow, FakeUnitOfWork)
    assert deps.uow.committed.events == {"evt_1": False}


# --- coins (ESC-3) ----------------------------------------------------------------------------

COIN_PURCHASE = {"type": "coin_purchase", "purpose": "coin_purchase", "coins": str(FEE)}


async def test_a_dashboard_refund_of_a_coin_purchase_takes_its_coins_back(deps: Deps) -> None:
    pid = await _captured(deps, "g7", dict(COIN_PURCHASE))
    assert _wallet(deps).balances[(OWNER, "COIN")] == FEE
    pi = await _intent(deps, pid)
    _provider(deps).refund_outside(pi, 4_900)
    await _deliver(deps, "evt_1", pi)
    _, [ref], _ = await _state(deps, pid)
    assert (ref.coins, ref.coins_state) == (4_900, CoinsState.TAKEN)
    await credits.settle_due_grants(deps)
    assert _moved(deps) == {
        CLEARING: -10_000,
        PLATFORM: 10_000,  # the cash backing of the coins still out
        (OWNER, "COIN"): 10_000,
        ("platform", "COIN"): -10_000,
    }


async def test_spent_coins_of_a_dashboard_refund_are_recorded_short(deps: Deps) -> None:
    """The cash is back with the buyer already: coins no longer there are never taken below
    zero; the refund is booked, and the shortfall recorded (state, metric, audit trail)."""
    pid = await _captured(deps, "g8", dict(COIN_PURCHASE))
    _wallet(deps).spend(OWNER, "COIN", 10_000)  # 4,900 coins left
    pi = await _intent(deps, pid)
    _provider(deps).refund_outside(pi, FEE)
    short = metrics.REFUND_COINS_SHORT._value.get()
    await _deliver(deps, "evt_1", pi)
    p, [ref], audit = await _state(deps, pid)
    assert p.state is PaymentState.REFUNDED
    assert (ref.status, ref.coins, ref.coins_state) == (
        RefundStatus.SUCCEEDED,
        FEE,
        CoinsState.SHORT,
    )
    assert metrics.REFUND_COINS_SHORT._value.get() == short + FEE
    assert any("short" in e.reason for e in audit)
    await credits.settle_due_grants(deps)
    assert _wallet(deps).balances[(OWNER, "COIN")] == 4_900  # never below zero
    assert _wallet(deps).balances[CLEARING] == 0  # the cash is booked back all the same
    clock = deps.clock
    assert isinstance(clock, Clock)
    clock.advance(120)
    assert await poll_due(deps) == 0  # nothing owed: short is final


# --- subscription purchases (API-4, CR-2) -----------------------------------------------------


async def _paid_purchase(deps: Deps) -> str:
    """A paid plan purchase whose money and credits are booked; its provider payment id."""
    txn = replace(paid_plan_transaction("txn_1"), provider_payment_intent_id="pi_plan")
    async with deps.uow as uow:
        await uow.transactions.add(txn)
        await uow.credit_grants.add(CreditGrant.issue(txn, deps.clock()))
        await uow.commit()
    await credits.settle_due_grants(deps)
    assert _wallet(deps).balances[(OWNER, "JOB_CREDIT")] == 2_500
    _provider(deps).intents["pi_plan"] = ProviderPayment(
        "pi_plan", ProviderStatus.CAPTURED, txn.amount_minor, "USD", amount_received=4_900
    )
    return "pi_plan"


async def test_a_dashboard_refund_of_a_purchase_revokes_its_credits(deps: Deps) -> None:
    pi = await _paid_purchase(deps)
    _provider(deps).refund_outside(pi, 4_900)
    assert (await _deliver(deps, "evt_1", pi)).applied
    async with deps.uow as uow:
        txn = await uow.transactions.get("txn_1")
    assert txn is not None and txn.status is TxnStatus.REFUNDED
    assert _moved(deps) == {}  # the money back to clearing, the credits back to issuance
    assert not (await _deliver(deps, "evt_2", pi)).applied  # a twin revokes nothing twice


async def test_a_partial_dashboard_refund_of_a_purchase_books_its_money_and_keeps_credits(
    deps: Deps,
) -> None:
    """Refunded in part at the provider: that money is booked once (out of revenue back to
    clearing), the purchase stays SUCCESS with its credits; the refund of the rest makes it
    REFUNDED, books only the rest and revokes the unused credits."""
    pi = await _paid_purchase(deps)
    re_id = _provider(deps).refund_outside(pi, 1_000)
    partial = metrics.PROVIDER_REFUNDS.labels("stripe", "purchase_partial")._value.get()
    assert (await _deliver(deps, "evt_1", pi)).applied
    assert not (await _deliver(deps, "evt_2", pi, "refund.updated")).applied  # its twin
    async with deps.uow as uow:
        txn = await uow.transactions.get("txn_1")
        grants = {g.id: g for g in await uow.credit_grants.for_transaction("txn_1")}
        audit = await uow.audit.list_for_transaction("txn_1")
    assert txn is not None and txn.status is TxnStatus.SUCCESS
    assert txn.metadata["refunded_minor"] == "1000"
    assert grants[f"purchase_refund:{re_id}"].transfer_id == f"payment:txn_1:refund:{re_id}"
    assert any("credits kept" in e.reason for e in audit)
    assert metrics.PROVIDER_REFUNDS.labels("stripe", "purchase_partial")._value.get() == (
        partial + 1
    )
    await credits.settle_due_grants(deps)
    # (The fake wallet keeps a purchase's money on revenue alone; the legs through clearing
    # are the ledger tests'.)
    assert _moved(deps) == {
        PLATFORM: 3_900,
        (OWNER, "JOB_CREDIT"): 2_500,  # kept
        (OWNER, "CANDIDATE_CREDIT"): 50,
    }
    _provider(deps).refund_outside(pi, 3_900)  # the rest
    assert (await _deliver(deps, "evt_3", pi)).applied
    async with deps.uow as uow:
        txn = await uow.transactions.get("txn_1")
    assert txn is not None and txn.status is TxnStatus.REFUNDED
    await credits.settle_due_grants(deps)
    assert _moved(deps) == {}  # every cent once: 1,000 + 3,900; the unused credits revoked


async def test_the_admins_refund_after_a_partial_one_refunds_and_books_the_rest(
    deps: Deps,
) -> None:
    pi = await _paid_purchase(deps)
    _provider(deps).refund_outside(pi, 1_000)
    await _deliver(deps, "evt_1", pi)
    await credits.refund_transaction(
        commands.RefundTransaction("rt-1", "txn_1", reason="customer asked"), deps
    )
    assert _provider(deps).refunded[pi] == 4_900  # asked for the 3,900 left, not the whole
    await _deliver(deps, "evt_2", pi)  # its own event books nothing more
    await credits.settle_due_grants(deps)
    assert _moved(deps) == {}


async def test_a_wallet_outage_while_taking_the_coins_back_is_finished_by_the_poller(
    deps: Deps,
) -> None:
    pid = await _captured(deps, "g9", dict(COIN_PURCHASE))
    pi = await _intent(deps, pid)
    _provider(deps).refund_outside(pi, FEE)
    _wallet(deps).fail = [Unavailable("wallet down")]
    await _deliver(deps, "evt_1", pi)
    _, [ref], _ = await _state(deps, pid)
    assert (ref.status, ref.coins_state) == (RefundStatus.SUCCEEDED, CoinsState.RESERVING)
    clock = deps.clock
    assert isinstance(clock, Clock)
    clock.advance(120)
    await poll_due(deps)
    _, [ref], _ = await _state(deps, pid)
    assert ref.coins_state is CoinsState.TAKEN
    await credits.settle_due_grants(deps)
    assert _moved(deps) == {}  # every cent and every coin back, once


async def test_a_delivery_the_provider_cannot_verify_now_is_refused_to_be_sent_again(
    deps: Deps,
) -> None:
    """PayPal verifies a delivery (and names a refund's payment, through its capture) by calling
    back: a provider that does not answer then makes the delivery PROVIDER_UNAVAILABLE (503 at
    the gateway: the provider sends it again), nothing stored, never an internal error."""

    async def unanswered(payload: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        raise OutcomeUnknown("provider unreachable", timeout=False)

    provider = _provider(deps)
    provider.verify_event = unanswered  # type: ignore[method-assign]
    with pytest.raises(errors.ProviderUnavailable):
        await _deliver(deps, "evt_1", "pi_any")
    assert isinstance(deps.uow, FakeUnitOfWork)
    assert deps.uow.committed.events == {}
