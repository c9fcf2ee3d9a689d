"""The ledger rules of payments (ESC-1, ESC-3, ESC-5), pure and against in-memory fakes: the legs
each kind of payment books under its deterministic transfer id, coins at the configured rate
(never a fraction), the funding fee's floor, marketplace money left to the jobs service, and the
auditor's comparison of what was captured with what the ledger holds."""

from __future__ import annotations

import pytest

from hirepay_platform.errors import ValidationError
from hirepay_platform.tcc import TccBranch
from payments.domain import commands, ledger
from payments.domain.credits import GrantKind
from payments.domain.ledger import (
    Account,
    ExpectedBooking,
    Kind,
    Leg,
    Purpose,
    audit_bookings,
    capture_legs,
    coins_for,
    funding_fee,
    parse_coin_rates,
    refund_legs,
)
from payments.domain.model import Method
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import authorize, capture, credits, refund
from tests.support.payments_fakes import (
    FakeLedger,
    ledger_deps,
)

CLEARING = Account("provider:stripe", "USD", Kind.PROVIDER_CLEARING)
REVENUE = Account("platform", "USD", Kind.PLATFORM_REVENUE)


def test_coin_rates_are_parsed_strictly() -> None:
    assert parse_coin_rates("USD:100, kwd:250") == {"USD": 100, "KWD": 250}
    for bad in ("USD", "USD:0", "USD:1.5", "COIN:100", "USD:-1"):
        with pytest.raises(ValueError):
            parse_coin_rates(bad)


def test_coins_follow_the_rate_and_are_never_a_fraction() -> None:
    rates = {"USD": 100, "KWD": 100, "JPY": 1}
    assert coins_for(1_000, "USD", rates) == 1_000  # $10.00 = 1,000 coins
    assert coins_for(2_500, "KWD", rates) == 250  # 2.500 KWD
    assert coins_for(7, "JPY", rates) == 7
    for amount, currency in ((1_005, "KWD"), (1_000, "EUR")):
        with pytest.raises(ValidationError):
            coins_for(amount, currency, rates)


def test_the_funding_fee_is_floored_and_the_escrow_takes_the_rest() -> None:
    assert funding_fee(100_000, 1000) == 10_000
    assert funding_fee(99, 1000) == 9
    assert funding_fee(5, 1000) == 0


def test_each_purpose_books_its_own_legs() -> None:
    fee = capture_legs(
        Purpose.FEE,
        provider="stripe",
        currency="USD",
        captured_minor=14_900,
        owner_id="co",
        metadata={},
    )
    assert fee == [Leg(CLEARING, REVENUE, 14_900)]
    assert (
        capture_legs(
            Purpose.MARKETPLACE,
            provider="stripe",
            currency="USD",
            captured_minor=1,
            owner_id="c",
            metadata={},
        )
        == []
    )
    job = capture_legs(
        Purpose.JOB_PAYMENT,
        provider="stripe",
        currency="USD",
        captured_minor=100_000,
        owner_id="cust",
        metadata={"coins": "100000", "fee_coins": "10000", "engagement_id": "eng_1"},
    )
    buyer = Account("cust", "COIN", Kind.USER)
    assert job == [
        Leg(CLEARING, Account("platform", "USD", Kind.ISSUANCE), 100_000),
        Leg(Account("platform", "COIN", Kind.ISSUANCE), buyer, 100_000),
        Leg(buyer, Account("platform", "COIN", Kind.PLATFORM_REVENUE), 10_000),
        Leg(buyer, Account("engagement:eng_1", "COIN", Kind.ESCROW), 90_000),
    ]
    assert refund_legs(Purpose.FEE, provider="stripe", currency="USD", refunded_minor=500) == [
        Leg(REVENUE, CLEARING, 500)
    ]
    for leg in job:  # a leg survives its JSON column
        assert Leg.from_json(leg.to_json()) == leg


def _expected(tid: str, amount: int, *, refund: bool = False, purpose=Purpose.FEE):
    return ExpectedBooking(tid, "pay_1", "stripe", "USD", amount, purpose, refund)


def test_the_audit_names_missing_transfers_and_revenue_that_differs() -> None:
    expected = [
        _expected("payment:p1:capture", 14_900),
        _expected("payment:p1:refund:r1", 4_900, refund=True),
        _expected("payment:p2:capture", 1_000, purpose=Purpose.COIN_PURCHASE),
    ]
    ids = {"payment:p1:capture", "payment:p1:refund:r1", "payment:p2:capture"}
    revenue = {"USD": {"payment:p1:capture": 14_900, "payment:p1:refund:r1": -4_900}}
    assert audit_bookings(expected, ids, revenue) == []
    missing = audit_bookings(expected, ids - {"payment:p1:refund:r1"}, revenue)
    assert [(f.kind, f.subject_id) for f in missing] == [(ledger.MISSING, "payment:p1:refund:r1")]
    short = {"USD": {"payment:p1:capture": 14_000, "payment:p1:refund:r1": -4_900}}
    assert [(f.kind, f.subject_id) for f in audit_bookings(expected, ids, short)] == [
        (ledger.REVENUE_MISMATCH, "USD")
    ]


# --- recorded with the settlement, booked by the worker ---------------------------------------


@pytest.fixture
def deps() -> Deps:
    return ledger_deps()


async def _captured(deps: Deps, gtx: str, metadata: dict[str, str]) -> str:
    branch = TccBranch(gtx, "payment")
    await authorize(
        commands.Authorize(
            f"a-{gtx}",
            branch,
            "co-1",
            14_900,
            "USD",
            Method.CARD,
            "pm_card_visa",
            metadata=metadata,
        ),
        deps,
    )
    result = await capture(commands.Capture(f"c-{gtx}", branch), deps)
    assert result.payment is not None
    return result.payment.id


async def test_a_fee_is_booked_once_and_marketplace_money_is_left_to_jobs(deps: Deps) -> None:
    fee = await _captured(deps, "g1", {"subsystem": "jobs"})
    offer = await _captured(deps, "g2", {"subsystem": "jobs", "purpose": "marketplace"})
    async with deps.uow as uow:
        assert [g.kind for g in await uow.credit_grants.for_payment(fee)] == [GrantKind.CAPTURE]
        assert await uow.credit_grants.for_payment(offer) == []
    assert await credits.settle_due_grants(deps) == 1
    assert await credits.settle_due_grants(deps) == 0
    wallet = deps.ledger
    assert isinstance(wallet, FakeLedger)
    assert wallet.balances == {("provider:stripe", "USD"): -14_900, ("platform", "USD"): 14_900}
    done = await refund(commands.Refund("r-1", fee, 4_900), deps)
    await refund(commands.Refund("r-1", fee, 4_900), deps)  # a replay owes nothing more
    await refund(commands.Refund("r-2", offer, 4_900), deps)  # jobs books its own refunds
    assert await credits.settle_due_grants(deps) == 1
    assert wallet.balances == {("provider:stripe", "USD"): -10_000, ("platform", "USD"): 10_000}
    assert set(wallet.transfers) == {
        f"payment:{fee}:capture",
        f"payment:{fee}:refund:{done.refund.id}",
    }
