"""Card disputes (charge.dispute.*): Stripe's dispute read as the domain's, the ledger legs of its
balance transactions, and the webhook handler against fakes — each balance transaction booked
once whatever the events and redeliveries, the payment's record, metrics and audit."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import stripe
from prometheus_client import REGISTRY

from hirepay_platform.tcc import TccBranch
from payments.adapters.stripe_disputes import DISPUTE_EVENT_TYPES, dispute_from
from payments.adapters.stripe_provider import WEBHOOK_EVENT_TYPES, StripeProvider
from payments.domain import commands, errors, ledger
from payments.domain.credits import GrantKind
from payments.domain.disputes import Dispute, DisputeMoney, DisputeStatus, ProviderDispute
from payments.domain.ledger import Leg, Purpose
from payments.domain.model import Method, PaymentState
from payments.domain.provider import EventSubject, OutcomeUnknown, ProviderEvent
from payments.service_layer.config import Policy
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import authorize, capture, credits
from payments.service_layer.handlers.disputes import apply_dispute_event
from payments.service_layer.providers import ProviderRegistry
from tests.support.payments_fakes import Clock, DisputingProvider, FakeLedger, FakeUnitOfWork

WITHDRAWAL = DisputeMoney("txn_w", -14_900, 1_500, "USD")
REINSTATEMENT = DisputeMoney("txn_r", 14_900, 0, "USD")
CLEARING, REVENUE = ("provider:stripe", "USD"), ("platform", "USD")
FEES = ("provider:stripe:fees", "USD")  # the provider's dispute fees: an expense

# A Dispute as Stripe sends it (trimmed: the fields Hirepay reads, and a few it does not).
STRIPE_DISPUTE = {
    "id": "dp_1",
    "object": "dispute",
    "amount": 25_000,
    "currency": "usd",
    "charge": "ch_1",
    "payment_intent": "pi_1",
    "reason": "fraudulent",
    "status": "needs_response",
    "is_charge_refundable": False,
    "metadata": {},
    "balance_transactions": [
        {
            "id": "txn_1",
            "object": "balance_transaction",
            "amount": -25_000,
            "currency": "usd",
            "description": "Chargeback withdrawal for ch_1",
            "fee": 1_500,
            "fee_details": [{"amount": 1_500, "description": "Dispute fee", "type": "stripe_fee"}],
            "net": -26_500,
            "type": "adjustment",
        }
    ],
}


# --- Stripe's words --------------------------------------------------------------------------


def test_a_stripe_dispute_reads_as_its_status_money_and_fee() -> None:
    view = dispute_from(STRIPE_DISPUTE)
    assert (view.id, view.payment_id, view.amount_minor, view.currency) == (
        "dp_1",
        "pi_1",
        25_000,
        "USD",
    )
    assert (view.status, view.reason) == (DisputeStatus.NEEDS_RESPONSE, "fraudulent")
    assert view.money == (DisputeMoney("txn_1", -25_000, 1_500, "USD"),)
    unknown = dispute_from({**STRIPE_DISPUTE, "status": "something_new"})
    assert unknown.status is DisputeStatus.NEEDS_RESPONSE  # never closed by an unknown word
    expanded = dispute_from(
        {
            **STRIPE_DISPUTE,
            "payment_intent": None,
            "charge": {"id": "ch_1", "payment_intent": "pi_7"},
        }
    )
    assert expanded.payment_id == "pi_7"


def test_dispute_events_are_subscribed_and_read_as_disputes() -> None:
    assert set(DISPUTE_EVENT_TYPES) <= set(WEBHOOK_EVENT_TYPES)
    assert "charge.dispute.funds_withdrawn" in DISPUTE_EVENT_TYPES
    provider = StripeProvider(
        "sk_test_x", api_base="http://127.0.0.1:1", webhook_secrets=["whsec_d"]
    )
    body = json.dumps(
        {
            "id": "evt_d",
            "type": "charge.dispute.created",
            "created": int(time.time()),
            "data": {"object": STRIPE_DISPUTE},
        }
    )
    event = provider.construct_event(
        body.encode(), stripe.WebhookSignature.generate_signature_header(body, "whsec_d")
    )
    assert (event.subject, event.object_id, event.payment_id) == (
        EventSubject.DISPUTE,
        "dp_1",
        "pi_1",
    )


# --- the ledger's legs -------------------------------------------------------------------------


def test_a_withdrawal_takes_the_money_and_fee_from_revenue_and_a_reinstatement_gives_it_back() -> (
    None
):
    cash, revenue = ledger.clearing("stripe", "USD"), ledger.revenue("USD")
    fees = ledger.provider_fees("stripe", "USD")
    withdrawn = ledger.dispute_legs(
        Purpose.FEE, provider="stripe", currency="USD", amount_minor=-14_900, fee_minor=1_500
    )
    assert withdrawn == [Leg(revenue, cash, 14_900), Leg(fees, cash, 1_500)]
    back = ledger.dispute_legs(
        Purpose.FEE, provider="stripe", currency="USD", amount_minor=14_900, fee_minor=-1_500
    )
    assert back == [Leg(cash, revenue, 14_900), Leg(cash, fees, 1_500)]
    coins = ledger.dispute_legs(
        Purpose.COIN_PURCHASE, provider="stripe", currency="USD", amount_minor=-500, fee_minor=0
    )
    assert coins == [Leg(ledger.issuance("USD"), cash, 500)]
    assert (
        ledger.dispute_legs(
            Purpose.MARKETPLACE, provider="stripe", currency="USD", amount_minor=-500, fee_minor=1
        )
        == []
    )


def test_an_older_view_never_takes_back_what_a_newer_one_recorded() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    newer = ProviderDispute(
        "dp_1", "pi_1", 14_900, "USD", DisputeStatus.WON, "fraudulent", (WITHDRAWAL, REINSTATEMENT)
    )
    older = ProviderDispute(
        "dp_1", "pi_1", 14_900, "USD", DisputeStatus.NEEDS_RESPONSE, "fraudulent", (WITHDRAWAL,)
    )
    d = Dispute.opened(newer, "stripe", "pay_1", now)
    assert d.observe(newer, now)
    assert (d.withdrawn_minor, d.reinstated_minor, d.fee_minor, d.outcome) == (
        14_900,
        14_900,
        1_500,
        "won",
    )
    assert not d.observe(older, now)
    assert (d.status, d.reinstated_minor, d.closed_at) == (DisputeStatus.WON, 14_900, now)


# --- the webhook handler -----------------------------------------------------------------------


@pytest.fixture
def provider() -> DisputingProvider:
    return DisputingProvider()


@pytest.fixture
def deps(provider: DisputingProvider) -> Deps:
    return Deps(
        FakeUnitOfWork(),
        ProviderRegistry([provider]),
        Policy(grant_retry_base=1, grant_retry_max=4),
        clock=Clock(),
        ledger=FakeLedger(),
    )


async def _captured(deps: Deps, key: str = "1") -> tuple[str, str]:
    """A captured 149.00 USD posting fee (`key` tells several apart): its id and provider id."""
    branch = TccBranch(f"g-dispute-{key}", "payment")
    await authorize(
        commands.Authorize(
            f"a-{key}",
            branch,
            f"co-{key}",
            14_900,
            "USD",
            Method.CARD,
            "pm_card_visa",
            metadata={"subsystem": "jobs"},
        ),
        deps,
    )
    result = await capture(commands.Capture(f"c-{key}", branch), deps)
    assert result.payment is not None and result.payment.state is PaymentState.CAPTURED
    return result.payment.id, result.payment.provider_payment_id


def _view(pi: str, status: DisputeStatus, *money: DisputeMoney) -> ProviderDispute:
    return ProviderDispute("dp_1", pi, 14_900, "USD", status, "fraudulent", tuple(money))


def _event(event_id: str, kind: str) -> ProviderEvent:
    return ProviderEvent(
        id=event_id,
        type=f"charge.dispute.{kind}",
        created=datetime(2026, 1, 10, tzinfo=UTC),
        subject=EventSubject.DISPUTE,
        object_id="dp_1",
    )


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _deliver(deps: Deps, provider: DisputingProvider, event_id: str, kind: str):  # type: ignore[no-untyped-def]
    return await apply_dispute_event(deps, provider, _event(event_id, kind), {"id": event_id})


async def test_a_won_dispute_books_its_withdrawal_fee_and_reinstatement_once_each(
    deps: Deps, provider: DisputingProvider
) -> None:
    payment_id, pi = await _captured(deps)
    await credits.settle_due_grants(deps)
    wallet = deps.ledger
    assert isinstance(wallet, FakeLedger)
    opened_before = _metric(
        "hirepay_payment_disputes_opened_total", provider="stripe", reason="fraudulent"
    )
    won_before = _metric("hirepay_payment_disputes_closed_total", provider="stripe", outcome="won")
    disputed_before = _metric("hirepay_payment_disputed_minor_total", currency="USD")

    provider.disputes["dp_1"] = _view(pi, DisputeStatus.NEEDS_RESPONSE, WITHDRAWAL)
    first = await _deliver(deps, provider, "evt_1", "created")
    assert first is not None and first.applied and not first.duplicate
    again = await _deliver(deps, provider, "evt_1", "created")  # redelivered
    assert again is not None and again.duplicate
    withdrawn = await _deliver(deps, provider, "evt_2", "funds_withdrawn")  # same money
    assert withdrawn is not None and not withdrawn.applied and not withdrawn.duplicate
    assert await credits.settle_due_grants(deps) == 1
    assert wallet.balances == {CLEARING: -14_900 + 16_400, REVENUE: 0, FEES: -1_500}

    provider.disputes["dp_1"] = _view(pi, DisputeStatus.WON, WITHDRAWAL, REINSTATEMENT)
    for event_id, kind in (("evt_3", "funds_reinstated"), ("evt_4", "closed"), ("evt_4", "closed")):
        await _deliver(deps, provider, event_id, kind)
    assert await credits.settle_due_grants(deps) == 1
    # Won: the money is back in revenue; Stripe keeps its dispute fee.
    assert wallet.balances == {CLEARING: -14_900 + 1_500, REVENUE: 14_900, FEES: -1_500}
    assert set(wallet.transfers) == {
        f"payment:{payment_id}:capture",
        f"payment:{payment_id}:dispute:txn_w",
        f"payment:{payment_id}:dispute:txn_r",
    }
    async with deps.uow as uow:
        [dispute] = await uow.disputes.for_payment(payment_id)
        grants = [g.kind for g in await uow.credit_grants.for_payment(payment_id)]
        payment = await uow.payments.get(payment_id)
    assert (
        dispute.status,
        dispute.withdrawn_minor,
        dispute.reinstated_minor,
        dispute.fee_minor,
    ) == (
        DisputeStatus.WON,
        14_900,
        14_900,
        1_500,
    )
    assert grants == [GrantKind.CAPTURE, GrantKind.DISPUTE, GrantKind.DISPUTE]
    assert payment is not None and payment.state is PaymentState.CAPTURED  # captured stays captured
    assert (
        _metric("hirepay_payment_disputes_opened_total", provider="stripe", reason="fraudulent")
        == opened_before + 1
    )
    assert (
        _metric("hirepay_payment_disputes_closed_total", provider="stripe", outcome="won")
        == won_before + 1
    )
    assert (
        _metric("hirepay_payment_disputed_minor_total", currency="USD") == disputed_before + 14_900
    )
    audit = [a for a in deps.uow.committed.audit if a.details.get("object_id") == "dp_1"]  # type: ignore[attr-defined]
    assert [a.details["to"] for a in audit] == ["needs_response", "needs_response", "won", "won"]
    assert audit[0].details["transfer_ids"] == f"payment:{payment_id}:dispute:txn_w"
    calls = [a for a in deps.uow.committed.audit if a.action == "provider_call"]  # type: ignore[attr-defined]
    assert any(a.details["operation"] == "retrieve_dispute" for a in calls)


async def test_a_lost_dispute_stays_withdrawn_with_its_fee(
    deps: Deps, provider: DisputingProvider
) -> None:
    _, pi = await _captured(deps)
    provider.disputes["dp_1"] = _view(pi, DisputeStatus.LOST, WITHDRAWAL)
    await _deliver(deps, provider, "evt_1", "closed")  # the only event to arrive: enough
    await credits.settle_due_grants(deps)
    wallet = deps.ledger
    assert isinstance(wallet, FakeLedger)
    assert wallet.balances == {CLEARING: -14_900 + 16_400, REVENUE: 0, FEES: -1_500}
    async with deps.uow as uow:
        dispute = await uow.disputes.get("dp_1")
    assert dispute is not None and dispute.outcome == "lost" and dispute.closed_at is not None


async def test_a_dispute_the_provider_cannot_show_stores_nothing_and_is_retried(
    deps: Deps, provider: DisputingProvider
) -> None:
    _, pi = await _captured(deps)
    provider.disputes["dp_1"] = OutcomeUnknown("down", timeout=True)
    with pytest.raises(errors.ProviderUnavailable):
        await _deliver(deps, provider, "evt_1", "created")
    provider.disputes["dp_1"] = _view(pi, DisputeStatus.NEEDS_RESPONSE, WITHDRAWAL)
    done = await _deliver(deps, provider, "evt_1", "created")  # the provider's retry applies it
    assert done is not None and done.applied


async def test_a_dispute_of_an_unknown_payment_is_retried_when_ours_and_ignored_when_not(
    deps: Deps, provider: DisputingProvider
) -> None:
    _, pi = await _captured(deps)
    ours = provider.intents[pi]
    provider.intents["pi_elsewhere"] = type(ours)(
        **{**_fields(ours), "id": "pi_elsewhere", "metadata": {"other": "1"}}
    )
    provider.intents["pi_ours_later"] = type(ours)(
        **{**_fields(ours), "id": "pi_ours_later", "metadata": {"hirepay_payment_id": "pay_x"}}
    )
    provider.disputes["dp_1"] = _view("pi_ours_later", DisputeStatus.NEEDS_RESPONSE, WITHDRAWAL)
    with pytest.raises(errors.EventNotApplicableYet):
        await _deliver(deps, provider, "evt_1", "created")
    provider.disputes["dp_1"] = _view("pi_elsewhere", DisputeStatus.NEEDS_RESPONSE, WITHDRAWAL)
    assert await _deliver(deps, provider, "evt_1", "created") is None
    assert deps.uow.committed.disputes == {}  # type: ignore[attr-defined]


def _fields(obj: object) -> dict[str, object]:
    from dataclasses import fields

    return {f.name: getattr(obj, f.name) for f in fields(obj)}  # type: ignore[arg-type]


def _charged_back(deps: Deps) -> list[str]:
    outbox = deps.uow.committed.outbox  # type: ignore[attr-defined]
    return [e.payment.id for e in outbox if e.type == "payment.charged_back"]


async def test_a_posting_fee_lost_in_full_is_told_to_jobs_once(
    deps: Deps, provider: DisputingProvider
) -> None:
    payment_id, pi = await _captured(deps)
    provider.disputes["dp_1"] = _view(pi, DisputeStatus.NEEDS_RESPONSE, WITHDRAWAL)
    await _deliver(deps, provider, "evt_1", "created")
    assert _charged_back(deps) == []  # open: the money is only held while the issuer decides
    provider.disputes["dp_1"] = _view(pi, DisputeStatus.LOST, WITHDRAWAL)
    # The closed event redelivered, and its twin (updated, re-fetched alike): told once.
    for event_id, kind in (("evt_2", "closed"), ("evt_2", "closed"), ("evt_3", "updated")):
        await _deliver(deps, provider, event_id, kind)
    assert _charged_back(deps) == [payment_id]
    [event] = [e for e in deps.uow.committed.outbox if e.type == "payment.charged_back"]  # type: ignore[attr-defined]
    assert event.subsystem == "jobs" and event.payment.state is PaymentState.CAPTURED


async def test_a_won_a_partial_or_an_offer_dispute_tells_jobs_nothing(
    deps: Deps, provider: DisputingProvider
) -> None:
    _, pi = await _captured(deps)
    provider.disputes["dp_1"] = _view(pi, DisputeStatus.WON, WITHDRAWAL, REINSTATEMENT)
    await _deliver(deps, provider, "evt_1", "closed")
    partial = replace(_view(pi, DisputeStatus.LOST, WITHDRAWAL), id="dp_2", amount_minor=4_900)
    provider.disputes["dp_2"] = partial
    await apply_dispute_event(
        deps, provider, replace(_event("evt_2", "closed"), object_id="dp_2"), {}
    )
    assert _charged_back(deps) == []  # won: nothing moved for good; partial: the rest is paid
    offer = TccBranch("g-offer", "payment")
    await authorize(
        commands.Authorize(
            "a-2",
            offer,
            "co-1",
            14_900,
            "USD",
            Method.CARD,
            "pm_card_visa",
            metadata={"subsystem": "jobs", "purpose": "marketplace"},
        ),
        deps,
    )
    captured = await capture(commands.Capture("c-2", offer), deps)
    assert captured.payment is not None
    lost = replace(
        _view(captured.payment.provider_payment_id, DisputeStatus.LOST, WITHDRAWAL), id="dp_3"
    )
    provider.disputes["dp_3"] = lost
    await apply_dispute_event(
        deps, provider, replace(_event("evt_3", "closed"), object_id="dp_3"), {}
    )
    assert _charged_back(deps) == []  # offer money: jobs' escrow, not a posting


# --- balance transactions settled in another currency ---------------------------------------

# A USD charge on an account that settles in EUR: Stripe converts the disputed money (exchange
# rate 0.92: 14,900 cents -> 13,708 euro cents) and charges its dispute fee in EUR.
WITHDRAWAL_EUR = DisputeMoney("txn_we", -13_708, 1_500, "EUR", exchange_rate="0.92")
REINSTATEMENT_EUR = DisputeMoney("txn_re", 13_708, 0, "EUR", exchange_rate="0.92")
CLEARING_EUR = ("provider:stripe", "EUR")
FEES_EUR = ("provider:stripe:fees", "EUR")


def test_a_fee_settled_in_another_currency_is_booked_in_it_and_the_amount_in_the_payments() -> None:
    legs = ledger.dispute_legs(
        Purpose.FEE,
        provider="stripe",
        currency="USD",
        amount_minor=-14_900,
        fee_minor=1_500,
        fee_currency="EUR",
    )
    assert legs == [
        Leg(ledger.revenue("USD"), ledger.clearing("stripe", "USD"), 14_900),
        Leg(ledger.provider_fees("stripe", "EUR"), ledger.clearing("stripe", "EUR"), 1_500),
    ]
    assert all(leg.source.unit == leg.target.unit for leg in legs)  # one unit per account


async def test_a_dispute_settled_in_another_currency_books_each_amount_exactly_in_its_unit(
    deps: Deps, provider: DisputingProvider
) -> None:
    payment_id, pi = await _captured(deps)
    await credits.settle_due_grants(deps)
    wallet = deps.ledger
    assert isinstance(wallet, FakeLedger)
    provider.disputes["dp_1"] = _view(pi, DisputeStatus.NEEDS_RESPONSE, WITHDRAWAL_EUR)
    await _deliver(deps, provider, "evt_1", "created")
    await _deliver(deps, provider, "evt_2", "funds_withdrawn")  # same money: booked once
    await credits.settle_due_grants(deps)
    # The disputed 14,900 USD cents out of revenue, where the capture booked them; Stripe's fee
    # 1,500 EUR cents out of the EUR clearing into its EUR fees account: nothing converted.
    assert {k: v for k, v in wallet.balances.items() if v} == {
        CLEARING_EUR: 1_500,
        FEES_EUR: -1_500,
    }
    provider.disputes["dp_1"] = _view(pi, DisputeStatus.WON, WITHDRAWAL_EUR, REINSTATEMENT_EUR)
    await _deliver(deps, provider, "evt_3", "closed")
    await credits.settle_due_grants(deps)
    assert {k: v for k, v in wallet.balances.items() if v} == {
        CLEARING: -14_900,
        REVENUE: 14_900,
        CLEARING_EUR: 1_500,
        FEES_EUR: -1_500,
    }
    async with deps.uow as uow:
        [dispute] = await uow.disputes.for_payment(payment_id)
        grants = {g.refund_id: g.granted for g in await uow.credit_grants.for_payment(payment_id)}
    # The record, in the dispute's currency: the amounts as the dispute's, the EUR fee left out.
    assert (dispute.withdrawn_minor, dispute.reinstated_minor, dispute.fee_minor) == (
        14_900,
        14_900,
        0,
    )
    assert grants["txn_we"] == {"USD": 14_900, "EUR": 1_500}  # per unit, never summed
    assert grants["txn_re"] == {"USD": 14_900}
    audit = [a for a in deps.uow.committed.audit if a.details.get("object_id") == "dp_1"]  # type: ignore[attr-defined]
    assert audit[0].details["settled_in"] == "EUR"
    assert audit[0].details["settled"] == "txn_we:-13708 EUR fee 1500 rate 0.92"
