"""The marketplace's pure rules: the money splits (10% / 20% / 70%) and the state machines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hirepay_platform.errors import ValidationError
from jobs.domain.errors import InvalidSagaTransition
from jobs.domain.marketplace import (
    CompletionSplit,
    Engagement,
    EngagementState,
    FundingSource,
    FundingSplit,
    InvalidMarketTransition,
    JobNotOpen,
    JobRequest,
    JobRequestStatus,
    JobTaken,
    MarketJob,
    MarketJobFields,
    MarketJobStatus,
    Offer,
    OfferState,
    completion_split,
    escrow_owner,
    funding_split,
    validate_unit,
)
from jobs.domain.posting_saga import Saga, SagaKind, SagaState

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def test_the_seed_example_to_the_cent() -> None:
    fund = funding_split(100_000)
    assert fund == FundingSplit(amount_minor=100_000, fee_minor=10_000, escrow_minor=90_000)
    done = completion_split(100_000, fund.escrow_minor)
    assert done == CompletionSplit(escrow_minor=90_000, fee_minor=20_000, contractor_minor=70_000)


def test_fees_round_down_and_the_remainder_goes_on() -> None:
    fund = funding_split(999)  # 99.9 -> 99
    assert (fund.fee_minor, fund.escrow_minor) == (99, 900)
    done = completion_split(999, fund.escrow_minor)  # 199.8 -> 199
    assert (done.fee_minor, done.contractor_minor) == (199, 701)
    assert funding_split(1) == FundingSplit(1, 0, 1)


@pytest.mark.parametrize("amount", [0, -1, True, 10**16])
def test_bad_amounts_are_refused(amount: int) -> None:
    with pytest.raises(ValidationError):
        funding_split(amount)


def test_rates_that_would_overdraw_the_escrow_are_refused() -> None:
    fund = funding_split(1_000, 5_000)
    with pytest.raises(ValueError):
        completion_split(1_000, fund.escrow_minor, 6_000)
    with pytest.raises(ValueError):
        funding_split(1_000, 10_001)


@given(
    amount=st.integers(min_value=1, max_value=10**15),
    fee1_bps=st.integers(min_value=0, max_value=5_000),
    fee2_bps=st.integers(min_value=0, max_value=5_000),
)
def test_the_parts_always_sum_to_the_amount(amount: int, fee1_bps: int, fee2_bps: int) -> None:
    fund = funding_split(amount, fee1_bps)
    done = completion_split(amount, fund.escrow_minor, fee2_bps)
    assert fund.fee_minor + fund.escrow_minor == amount
    assert done.fee_minor + done.contractor_minor == fund.escrow_minor
    assert fund.fee_minor + done.fee_minor + done.contractor_minor == amount
    assert min(fund.fee_minor, fund.escrow_minor, done.fee_minor, done.contractor_minor) >= 0
    assert fund.fee_minor == amount * fee1_bps // 10_000


def test_units_are_currencies_or_coins() -> None:
    assert validate_unit("usd") == "USD"
    assert validate_unit("COIN") == "COIN"
    for bad in ("JOB_CREDIT", "XXQ", ""):
        with pytest.raises(ValidationError):
            validate_unit(bad)
    assert escrow_owner("eng_1") == "engagement:eng_1"


def _job() -> MarketJob:
    fields = MarketJobFields("Fix my sink", "A leaking kitchen sink to fix").validate()
    return MarketJob("mjob_1", "cust", fields, MarketJobStatus.OPEN, NOW, NOW)


def test_job_fields_are_validated_by_field() -> None:
    with pytest.raises(ValidationError) as caught:
        MarketJobFields("x", "short", budget_minor=-1).validate()
    assert set(caught.value.metadata) >= {"title", "description", "budget_minor"}


def test_exactly_one_acceptance_holds_the_job() -> None:
    job = _job()
    job.lock_for("offer_a", NOW)
    job.lock_for("offer_a", NOW)  # the same acceptance again
    with pytest.raises(JobTaken):
        job.lock_for("offer_b", NOW)
    with pytest.raises(JobNotOpen):
        job.ensure_open()
    with pytest.raises(JobTaken):
        job.assign("offer_b", "c2", "eng_b", NOW)
    job.assign("offer_a", "c1", "eng_a", NOW)
    assert (job.status, job.contractor_id, job.accepting_offer_id) == (
        MarketJobStatus.ASSIGNED,
        "c1",
        "",
    )
    with pytest.raises(JobTaken):
        job.lock_for("offer_b", NOW)


def test_a_failed_acceptance_opens_the_job_again() -> None:
    job = _job()
    job.lock_for("offer_a", NOW)
    job.unlock("offer_b", NOW)  # not the holder: nothing
    assert job.accepting_offer_id == "offer_a"
    job.unlock("offer_a", NOW)
    job.ensure_open()
    job.close(NOW)
    with pytest.raises(InvalidMarketTransition):
        job.reopen(NOW)


def test_job_requests_are_decided_once() -> None:
    req = JobRequest("r", "j", "cust", "con", "", JobRequestStatus.PENDING, NOW, NOW)
    req.decide(True, NOW)
    req.decide(True, NOW)
    assert req.status is JobRequestStatus.ACCEPTED
    with pytest.raises(InvalidMarketTransition):
        req.decide(False, NOW)


def _offer() -> Offer:
    return Offer(
        id="offer_1",
        job_id="mjob_1",
        customer_id="cust",
        contractor_id="con",
        amount_minor=100_000,
        unit="USD",
        funding=FundingSource.CARD,
        state=OfferState.RESERVING,
        saga_id="saga_1",
        request_id="k",
        expires_at=NOW + timedelta(hours=1),
        created_at=NOW,
        updated_at=NOW,
    )


def test_offer_lifecycle() -> None:
    offer = _offer()
    offer.reserved("pay_1", NOW)
    assert offer.state is OfferState.PENDING and offer.payment_id == "pay_1"
    assert not offer.expired_at(NOW) and offer.expired_at(NOW + timedelta(hours=1))
    offer.accept(NOW)
    with pytest.raises(InvalidMarketTransition):
        offer.accept(NOW)  # accepting twice
    with pytest.raises(InvalidMarketTransition):
        offer.close(OfferState.REJECTED, "x", NOW)
    offer.accepted("eng_1", NOW)
    assert offer.final and offer.engagement_id == "eng_1"


def test_a_closed_offer_stays_closed() -> None:
    offer = _offer()
    offer.reserved("pay_1", NOW)
    offer.close(OfferState.EXPIRED, "expired", NOW)
    for to in (OfferState.PENDING, OfferState.ACCEPTING, OfferState.REJECTED):
        with pytest.raises(InvalidMarketTransition):
            offer._move(to, NOW)


def test_engagement_lifecycle_is_recorded() -> None:
    offer = _offer()
    offer.reserved("pay_1", NOW)
    eng = Engagement.funded_by_offer("eng_1", offer, funding_split(100_000), "acc_9", NOW)
    assert (eng.state, eng.fee1_minor, eng.escrow_minor) == (
        EngagementState.ASSIGNED,
        10_000,
        90_000,
    )
    eng.move(EngagementState.IN_PROGRESS, "con", "started", NOW)
    eng.move(EngagementState.DISPUTED, "cust", "late", NOW)
    with pytest.raises(InvalidMarketTransition):
        eng.move(EngagementState.IN_PROGRESS, "con", "", NOW)
    eng.move(EngagementState.COMPLETED, "admin", "release", NOW)
    assert [t.to_state for t in eng.drain_transitions()] == [
        EngagementState.ASSIGNED,
        EngagementState.IN_PROGRESS,
        EngagementState.DISPUTED,
        EngagementState.COMPLETED,
    ]
    with pytest.raises(InvalidMarketTransition):
        eng.move(EngagementState.CANCELLED, "cust", "", NOW)


def test_offer_sagas_follow_their_own_transition_table() -> None:
    saga = Saga(
        id="s",
        company_id="cust",
        request_id="k",
        fingerprint="f",
        actor="cust",
        state=SagaState.TRYING,
        method="card",  # type: ignore[arg-type]
        created_at=NOW,
        updated_at=NOW,
        deadline_at=NOW,
        kind=SagaKind.OFFER,
    )
    saga._move(SagaState.OFFERED, NOW)
    with pytest.raises(InvalidSagaTransition):
        saga._move(SagaState.AWAITING_SETTLEMENT, NOW)
    saga._move(SagaState.CONFIRMING, NOW)
    saga._move(SagaState.BOOKING, NOW)
    with pytest.raises(InvalidSagaTransition):
        saga._move(SagaState.CANCELLING, NOW)  # captured money is booked, never released
    saga.finish(SagaState.COMPLETED, NOW)
