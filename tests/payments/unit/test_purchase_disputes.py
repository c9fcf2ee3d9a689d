"""Disputes of plan purchases (subscription transactions) through the one dispute handler, against
fakes (ESC-1 every cent, CR-2 credits, API-4 statuses, PAY-15 audit, OPS-1 metrics): each money
movement booked once between revenue and the provider's clearing (its fee into the provider's fees
account) whatever the events and redeliveries; lost in full, the purchase is REFUNDED and its
unused credits revoked as by a full refund (the money not booked twice); won, the money is back
and the credits stay; lost in part, it stays paid with its credits and a later refund books only
the rest. Wallet and credit balances asserted."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from payments.domain import commands, errors
from payments.domain.credits import CANDIDATE_CREDIT, JOB_CREDIT, GrantKind
from payments.domain.disputes import DisputeMoney, DisputeStatus, ProviderDispute
from payments.domain.provider import EventSubject, ProviderEvent, ProviderPayment, ProviderStatus
from payments.domain.transactions import TxnStatus
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import credits
from payments.service_layer.handlers.disputes import apply_dispute_event, disputes_of_purchase
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import Clock, DisputingProvider, FakeLedger, FakeUnitOfWork
from tests.support.payments_helpers import paid_plan_transaction

PRICE = 4_900  # paid_plan_transaction's SWIFT_HIRE: 2,500 job credits, 50 candidate credits
FEE = 1_500
WITHDRAWAL = DisputeMoney("txn_pw", -PRICE, FEE, "USD")
REINSTATEMENT = DisputeMoney("txn_pr", PRICE, 0, "USD")
CLEARING, REVENUE = ("provider:stripe", "USD"), ("platform", "USD")
FEES = ("provider:stripe:fees", "USD")
JOB, CANDIDATE = ("co-1", JOB_CREDIT), ("co-1", CANDIDATE_CREDIT)


@pytest.fixture
def provider() -> DisputingProvider:
    found = DisputingProvider()
    found.intents["pi_plan"] = ProviderPayment(
        "pi_plan", ProviderStatus.CAPTURED, PRICE, "USD", amount_received=PRICE
    )
    return found


@pytest.fixture
def deps(provider: DisputingProvider) -> Deps:
    return Deps(
        FakeUnitOfWork(),
        ProviderRegistry([provider]),
        Policy(grant_retry_base=1, grant_retry_max=4),
        clock=Clock(),
        ledger=FakeLedger(),
    )


def _wallet(deps: Deps) -> FakeLedger:
    assert isinstance(deps.ledger, FakeLedger)
    return deps.ledger


async def _paid(deps: Deps) -> str:
    """A paid SWIFT_HIRE purchase, its money and credits booked; 1,000 job credits spent."""
    txn = replace(paid_plan_transaction("txn_plan"), provider_payment_intent_id="pi_plan")
    async with deps.uow as uow:
        await uow.transactions.add(txn)
        await credits.record_settlement(uow, txn, deps)
        await uow.commit()
    await credits.settle_due_grants(deps)
    wallet = _wallet(deps)
    assert wallet.balances == {REVENUE: PRICE, JOB: 2_500, CANDIDATE: 50}
    wallet.spend("co-1", JOB_CREDIT, 1_000)
    return txn.id


def _view(status: DisputeStatus, *money: DisputeMoney, amount: int = PRICE) -> ProviderDispute:
    return ProviderDispute("dp_p", "pi_plan", amount, "USD", status, "fraudulent", tuple(money))


async def _deliver(deps: Deps, provider: DisputingProvider, event_id: str, kind: str):  # type: ignore[no-untyped-def]
    event = ProviderEvent(
        id=event_id,
        type=f"charge.dispute.{kind}",
        created=datetime(2026, 1, 10, tzinfo=UTC),
        subject=EventSubject.DISPUTE,
        object_id="dp_p",
    )
    done = await apply_dispute_event(deps, provider, event, {"id": event_id})
    assert done is not None  # applied to the purchase, never left unapplied
    return done


async def _txn(deps: Deps, txn_id: str):  # type: ignore[no-untyped-def]
    async with deps.uow as uow:
        found = await uow.transactions.get(txn_id)
    assert found is not None
    return found


def _refunded_events(deps: Deps) -> list[str]:
    outbox = deps.uow.committed.outbox  # type: ignore[attr-defined]
    return [e.transaction.id for e in outbox if e.type == "transaction.refunded"]


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_purchase_dispute_lost_in_full_refunds_it_and_revokes_its_unused_credits_once(
    deps: Deps, provider: DisputingProvider
) -> None:
    txn_id = await _paid(deps)
    wallet = _wallet(deps)
    opened_before = _metric(
        "hirepay_payment_disputes_opened_total", provider="stripe", reason="fraudulent"
    )
    lost_before = _metric(
        "hirepay_payment_disputes_closed_total", provider="stripe", outcome="lost"
    )

    provider.disputes["dp_p"] = _view(DisputeStatus.NEEDS_RESPONSE, WITHDRAWAL)
    first = await _deliver(deps, provider, "evt_1", "created")
    assert first.applied and not first.duplicate
    assert (await _deliver(deps, provider, "evt_1", "created")).duplicate  # redelivered
    twin = await _deliver(deps, provider, "evt_2", "funds_withdrawn")  # the same money
    assert not twin.applied and not twin.duplicate
    assert await credits.settle_due_grants(deps) == 1
    # Open: the money and Stripe's fee are withdrawn out of revenue; the purchase stays paid
    # with its credits while the issuer decides.
    assert wallet.balances == {
        REVENUE: 0,
        CLEARING: PRICE + FEE,
        FEES: -FEE,
        JOB: 1_500,
        CANDIDATE: 50,
    }
    txn = await _txn(deps, txn_id)
    assert txn.status is TxnStatus.SUCCESS and txn.metadata["disputed_minor"] == str(PRICE)

    provider.disputes["dp_p"] = _view(DisputeStatus.LOST, WITHDRAWAL)
    for event_id, kind in (("evt_3", "closed"), ("evt_3", "closed"), ("evt_4", "updated")):
        await _deliver(deps, provider, event_id, kind)
    await credits.settle_due_grants(deps)
    # Lost in full: REFUNDED, its unused credits revoked (the 1,000 spent stay spent); its money
    # was booked by the withdrawal, never a second time by the revocation.
    assert wallet.balances == {
        REVENUE: 0,
        CLEARING: PRICE + FEE,
        FEES: -FEE,
        JOB: 0,
        CANDIDATE: 0,
    }
    txn = await _txn(deps, txn_id)
    assert txn.status is TxnStatus.REFUNDED
    assert not txn.is_active(datetime.now(UTC).date())  # the subscription ends, as on a refund
    assert _refunded_events(deps) == [txn_id]  # the subsystem told once
    assert sorted(wallet.transfers) == sorted(
        [
            f"payment:{txn_id}:capture",
            f"payment:{txn_id}:dispute:txn_pw",
            f"payment:{txn_id}:refund:full",
        ]
    )
    assert wallet.transfers[f"payment:{txn_id}:refund:full"] == {
        JOB_CREDIT: 1_500,
        CANDIDATE_CREDIT: 50,
    }
    async with deps.uow as uow:
        grants = {g.kind: g for g in await uow.credit_grants.for_transaction(txn_id)}
    assert set(grants) == {GrantKind.ISSUE, GrantKind.DISPUTE, GrantKind.REVOKE}
    assert grants[GrantKind.REVOKE].used == {JOB_CREDIT: 1_000, CANDIDATE_CREDIT: 0}
    [dispute] = await disputes_of_purchase(txn_id, deps)  # what GetTransaction shows
    assert (dispute.status, dispute.withdrawn_minor, dispute.fee_minor) == (
        DisputeStatus.LOST,
        PRICE,
        FEE,
    )
    assert dispute.payment_id == txn_id and dispute.closed_at is not None
    assert (
        _metric("hirepay_payment_disputes_opened_total", provider="stripe", reason="fraudulent")
        == opened_before + 1
    )
    assert (
        _metric("hirepay_payment_disputes_closed_total", provider="stripe", outcome="lost")
        == lost_before + 1
    )
    audit = deps.uow.committed.audit  # type: ignore[attr-defined]
    steps = [a for a in audit if a.details.get("object_id") == "dp_p"]
    assert [a.details["to"] for a in steps] == ["needs_response", "needs_response", "lost", "lost"]
    assert all(a.transaction_id == txn_id and not a.payment_id for a in steps)
    assert steps[0].details["transfer_ids"] == f"payment:{txn_id}:dispute:txn_pw"
    [refund] = [a for a in audit if a.action == "refund" and a.transaction_id == txn_id]
    assert refund.details["to"] == "REFUNDED" and "dp_p lost" in refund.reason


async def test_a_won_purchase_dispute_gives_the_money_back_and_keeps_the_credits(
    deps: Deps, provider: DisputingProvider
) -> None:
    txn_id = await _paid(deps)
    wallet = _wallet(deps)
    provider.disputes["dp_p"] = _view(DisputeStatus.NEEDS_RESPONSE, WITHDRAWAL)
    await _deliver(deps, provider, "evt_1", "created")
    provider.disputes["dp_p"] = _view(DisputeStatus.WON, WITHDRAWAL, REINSTATEMENT)
    await _deliver(deps, provider, "evt_2", "funds_reinstated")
    await _deliver(deps, provider, "evt_3", "closed")
    await credits.settle_due_grants(deps)
    # Won: the money is back in revenue, Stripe keeps its fee, the credits were never touched.
    assert wallet.balances == {
        REVENUE: PRICE,
        CLEARING: FEE,
        FEES: -FEE,
        JOB: 1_500,
        CANDIDATE: 50,
    }
    txn = await _txn(deps, txn_id)
    assert txn.status is TxnStatus.SUCCESS and txn.metadata["disputed_minor"] == "0"
    assert _refunded_events(deps) == []
    # Refundable again in full: the admin's refund asks Stripe for the whole price.
    await credits.refund_transaction(commands.RefundTransaction("r-1", txn_id), deps)
    assert provider.refunded["pi_plan"] == PRICE
    assert wallet.balances[REVENUE] == 0 and wallet.balances[JOB] == 0


async def test_a_purchase_dispute_lost_in_part_keeps_it_paid_and_a_refund_books_only_the_rest(
    deps: Deps, provider: DisputingProvider
) -> None:
    txn_id = await _paid(deps)
    wallet = _wallet(deps)
    part = DisputeMoney("txn_pp", -1_900, FEE, "USD")
    provider.disputes["dp_p"] = _view(DisputeStatus.LOST, part, amount=1_900)
    await _deliver(deps, provider, "evt_1", "closed")
    await credits.settle_due_grants(deps)
    # Lost in part: that money booked, the purchase stays paid and keeps its credits (as after a
    # refund of part of its price).
    assert wallet.balances == {
        REVENUE: PRICE - 1_900,
        CLEARING: 1_900 + FEE,
        FEES: -FEE,
        JOB: 1_500,
        CANDIDATE: 50,
    }
    txn = await _txn(deps, txn_id)
    assert txn.status is TxnStatus.SUCCESS and _refunded_events(deps) == []
    # The admin's full refund then refunds and books only the rest; the unused credits go.
    await credits.refund_transaction(commands.RefundTransaction("r-1", txn_id), deps)
    assert provider.refunded["pi_plan"] == PRICE - 1_900
    assert wallet.balances == {
        REVENUE: 0,
        CLEARING: 1_900 + FEE,  # the fake ledger books a purchase's money on revenue only
        FEES: -FEE,
        JOB: 0,
        CANDIDATE: 0,
    }
    assert (await _txn(deps, txn_id)).status is TxnStatus.REFUNDED


async def test_a_purchase_whose_money_a_dispute_withdrew_is_not_refunded_again(
    deps: Deps, provider: DisputingProvider
) -> None:
    txn_id = await _paid(deps)
    provider.disputes["dp_p"] = _view(DisputeStatus.NEEDS_RESPONSE, WITHDRAWAL)
    await _deliver(deps, provider, "evt_1", "created")
    # Open, its whole price withdrawn: the admin's refund has nothing left to ask the provider
    # for (the dispute decides), and is refused before any provider call.
    with pytest.raises(errors.PaymentNotRefundable):
        await credits.refund_transaction(commands.RefundTransaction("r-1", txn_id), deps)
    assert "pi_plan" not in provider.refunded
    assert (await _txn(deps, txn_id)).status is TxnStatus.SUCCESS


async def test_a_running_fee_of_a_purchase_dispute_books_each_change_once(
    deps: Deps, provider: DisputingProvider
) -> None:
    """A fee the provider changes after it was booked (PayPal's running fee): the difference is
    booked once, read from the purchase's own bookings, so the ledger ends at the final fee."""
    txn_id = await _paid(deps)
    wallet = _wallet(deps)
    hold = DisputeMoney("dp_p:held", -PRICE, 0, "USD")
    fee = DisputeMoney("dp_p:fee:CHARGEBACK_FEE", 0, 2_000, "USD", running=True)
    provider.disputes["dp_p"] = _view(DisputeStatus.NEEDS_RESPONSE, hold, fee)
    await _deliver(deps, provider, "evt_1", "created")
    provider.disputes["dp_p"] = _view(
        DisputeStatus.UNDER_REVIEW, hold, replace(fee, fee_minor=2_500)
    )
    for event_id in ("evt_2", "evt_2", "evt_3"):
        await _deliver(deps, provider, event_id, "updated")
    await credits.settle_due_grants(deps)
    assert wallet.balances == {
        REVENUE: 0,
        CLEARING: PRICE + 2_500,
        FEES: -2_500,
        JOB: 1_500,
        CANDIDATE: 50,
    }
    assert sorted(t for t in wallet.transfers if ":dispute:" in t) == [
        f"payment:{txn_id}:dispute:dp_p:fee:CHARGEBACK_FEE",
        f"payment:{txn_id}:dispute:dp_p:fee:CHARGEBACK_FEE:2",
        f"payment:{txn_id}:dispute:dp_p:held",
    ]


async def test_another_providers_purchase_is_left_to_be_recorded(
    deps: Deps, provider: DisputingProvider
) -> None:
    txn = replace(
        paid_plan_transaction("txn_pp"), provider_payment_intent_id="pi_plan", provider="paypal"
    )
    async with deps.uow as uow:
        await uow.transactions.add(txn)
        await uow.commit()
    provider.disputes["dp_p"] = _view(DisputeStatus.NEEDS_RESPONSE, WITHDRAWAL)
    event = ProviderEvent(
        id="evt_1",
        type="charge.dispute.created",
        created=datetime(2026, 1, 10, tzinfo=UTC),
        subject=EventSubject.DISPUTE,
        object_id="dp_p",
    )
    assert await apply_dispute_event(deps, provider, event, {}) is None
    assert deps.uow.committed.disputes == {}  # type: ignore[attr-defined]
