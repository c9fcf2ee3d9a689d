"""The escrow's pure rules (ESC-7, ESC-8): completion 20/70, cancellation by policy, dispute
resolutions, and the legs that carry each payout; parts always sum to the whole."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hirepay_platform.errors import ValidationError
from jobs.domain.escrow import (
    AccountKind,
    CancelPolicy,
    Dispute,
    DisputeAlreadyResolved,
    DisputeState,
    Resolution,
    StepKind,
    cancel_payout,
    completion_payout,
    plan_step,
    resolution_payout,
)
from jobs.domain.marketplace import EngagementState, FundingSource, funding_split
from tests.support.escrow_support import unit_engagement as engagement

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def test_the_seed_example_to_the_cent() -> None:
    e = engagement(100_000)  # $1,000.00
    assert (e.fee1_minor, e.escrow_minor) == (10_000, 90_000)
    payout = completion_payout(e, 2_000)
    assert (payout.to_revenue, payout.to_contractor, payout.to_customer) == (20_000, 70_000, 0)


@given(st.integers(1, 10**12), st.integers(0, 5_000), st.integers(0, 5_000))
def test_completion_parts_sum_to_the_amount(amount: int, fee1_bps: int, fee2_bps: int) -> None:
    split = funding_split(amount, fee1_bps)
    e = engagement(amount)
    e.fee1_minor, e.escrow_minor = split.fee_minor, split.escrow_minor
    payout = completion_payout(e, fee2_bps)
    assert payout.to_revenue == amount * fee2_bps // 10_000
    assert split.fee_minor + payout.to_revenue + payout.to_contractor == amount
    assert payout.to_revenue + payout.to_contractor == e.escrow_minor


@given(st.integers(1, 10**12), st.booleans(), st.booleans(), st.booleans())
def test_cancel_by_policy(amount: int, started: bool, before: bool, after: bool) -> None:
    state = EngagementState.IN_PROGRESS if started else EngagementState.ASSIGNED
    e = engagement(amount, state)
    policy = CancelPolicy(refund_fee_before_start=before, refund_fee_after_start=after)
    payout = cancel_payout(e, policy)
    fee_back = after if started else before
    assert payout.to_customer == e.escrow_minor
    assert payout.fee_back_minor == (e.fee1_minor if fee_back else 0)
    assert payout.to_revenue == payout.to_contractor == 0


def test_default_policy_before_and_after_start() -> None:
    policy = CancelPolicy()
    assert cancel_payout(engagement(100_000, EngagementState.ASSIGNED), policy).refunded_minor == (
        100_000
    )
    assert cancel_payout(engagement(100_000), policy).refunded_minor == 90_000


@given(st.integers(1, 10**9), st.data())
def test_resolutions_empty_the_escrow(amount: int, data: st.DataObject) -> None:
    e = engagement(amount)
    release = resolution_payout(e, Resolution.RELEASE, 0, 2_000)
    assert release == completion_payout(e, 2_000)
    refund = resolution_payout(e, Resolution.REFUND, 0, 2_000)
    assert (refund.to_customer, refund.fee_back_minor) == (e.escrow_minor, 0)
    share = data.draw(st.integers(0, e.escrow_minor))
    split = resolution_payout(e, Resolution.SPLIT, share, 2_000)
    assert (split.to_contractor, split.to_customer, split.to_revenue) == (
        share,
        e.escrow_minor - share,
        0,
    )


@pytest.mark.parametrize("share", [-1, 90_001, True])
def test_a_split_outside_the_escrow_is_refused(share: int) -> None:
    with pytest.raises(ValidationError):
        resolution_payout(engagement(100_000), Resolution.SPLIT, share, 2_000)


def test_a_dispute_resolves_once() -> None:
    d = Dispute("dsp_1", "eng_1", "ctr", "late", DisputeState.OPEN, NOW)
    d.resolve(Resolution.REFUND, 0, "admin", "", NOW)
    with pytest.raises(DisputeAlreadyResolved):
        d.resolve(Resolution.RELEASE, 0, "admin", "", NOW)


def test_legs_go_back_the_way_the_money_came() -> None:
    coins = engagement(100_000, EngagementState.ASSIGNED)
    step = plan_step(coins, StepKind.CANCEL, cancel_payout(coins, CancelPolicy()), NOW)
    assert step.refund_minor == 0 and not step.refund_legs
    assert {(leg.source.kind, leg.target.owner, leg.amount_minor) for leg in step.legs} == {
        (AccountKind.ESCROW, "cust", 90_000),
        (AccountKind.PLATFORM_REVENUE, "cust", 10_000),
    }
    card = engagement(100_000, EngagementState.ASSIGNED, FundingSource.CARD, "USD")
    step = plan_step(card, StepKind.CANCEL, cancel_payout(card, CancelPolicy()), NOW, "stripe")
    assert step.refund_minor == 100_000 and step.payment_id == "pay_1"
    assert not step.ledger_legs
    assert {leg.target.owner for leg in step.refund_legs} == {"provider:stripe"}
    step.refunded("rfd_1", NOW)
    assert step.refund_transfer_id == "payment:pay_1:refund:rfd_1"
    assert step.transfer_id == "engagement:eng_1:cancel"
