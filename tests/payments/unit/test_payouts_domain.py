"""The withdrawal state machine and request validation (ESC-9), pure domain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hirepay_platform.errors import ValidationError
from payments.domain.payouts import (
    PayoutAccount,
    PayoutAccountState,
    ProviderOutcome,
    Withdrawal,
    WithdrawalState,
    stuck_detail,
    validate_request,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def withdrawal() -> Withdrawal:
    return Withdrawal(
        id="wd_1",
        user_id="pro-1",
        request_id="r1",
        amount_minor=7_550,
        currency="USD",
        provider="stripe",
        provider_account_id="acct_1",
        state=WithdrawalState.REQUESTED,
        created_at=NOW,
        updated_at=NOW,
        next_attempt_at=NOW,
    )


def test_the_happy_path_ends_paid_only_once_the_ledger_followed() -> None:
    w = withdrawal()
    assert (w.branch.global_tx_id, w.branch.branch_id) == ("payout", "wd_1")
    assert w.key("transfer") == "withdrawal:wd_1:transfer"
    w.held(NOW)
    assert w.state is WithdrawalState.SENDING
    w.sent("tr_1", "po_1", NOW)
    assert (w.state, w.transfer_id, w.payout_id) == (WithdrawalState.IN_TRANSIT, "tr_1", "po_1")
    assert w.provider_paid(NOW) is True
    assert w.state is WithdrawalState.IN_TRANSIT  # paid by the bank, not yet on the ledger
    assert w.provider_paid(NOW) is False  # a second webhook changes nothing
    assert w.provider_failed("no_account", "", NOW) is False  # nor a contradicting one
    w.settled(NOW)
    assert (w.state, w.final) == (WithdrawalState.PAID, True)
    assert w.provider_failed("no_account", "", NOW) is False


def test_a_payout_returned_after_it_was_paid_ends_returned_once_credited_back() -> None:
    w = withdrawal()
    w.held(NOW)
    w.sent("tr_1", "po_1", NOW)
    assert w.provider_returned("account_closed", "", NOW) is False  # not reported paid yet
    assert w.provider_paid(NOW) is True
    w.settled(NOW)
    assert (w.state, w.final) == (WithdrawalState.PAID, True)
    assert w.provider_returned("account_closed", "closed", NOW) is True
    # Paid on the ledger, returned at the bank: not final until the money is credited back.
    assert (w.state, w.outcome, w.final, w.returning) == (
        WithdrawalState.PAID,
        ProviderOutcome.RETURNED,
        False,
        True,
    )
    assert w.provider_returned("account_closed", "", NOW) is False  # a duplicate: nothing
    assert w.provider_paid(NOW) is False
    assert w.credit_back_transfer_id == "payout:wd_1:returned"
    w.settled(NOW)
    assert (w.state, w.final, w.returning, w.failure_code) == (
        WithdrawalState.RETURNED,
        True,
        False,
        "account_closed",
    )
    assert w.provider_returned("account_closed", "", NOW) is False


def test_a_return_seen_before_the_ledger_followed_the_payment_is_still_a_return() -> None:
    """Paid was recorded but the hold not posted yet when the return arrives: the outcome
    becomes returned (the hold is posted, then credited back), never a release of a hold a
    twin may be posting at that moment."""
    w = withdrawal()
    w.held(NOW)
    w.sent("tr_1", "po_1", NOW)
    assert w.provider_paid(NOW) is True
    assert w.provider_returned("no_account", "", NOW) is True
    assert (w.state, w.outcome) == (WithdrawalState.IN_TRANSIT, ProviderOutcome.RETURNED)
    w.settled(NOW)
    assert w.state is WithdrawalState.RETURNED


def test_a_failure_keeps_its_code_and_ends_failed() -> None:
    w = withdrawal()
    w.held(NOW)
    assert w.provider_failed("", "boom", NOW) is True
    assert (w.outcome, w.failure_code, w.failure_message) == (
        ProviderOutcome.FAILED,
        "payout_failed",
        "boom",
    )
    w.settled(NOW)
    assert w.state is WithdrawalState.FAILED


def test_steps_do_not_move_backwards() -> None:
    w = withdrawal()
    w.held(NOW)
    w.sent("tr_1", "po_1", NOW)
    w.held(NOW)  # a late replay of the hold step
    assert w.state is WithdrawalState.IN_TRANSIT


def test_retry_backoff_is_recorded() -> None:
    w = withdrawal()
    w.retry_later(NOW, 2.0, "x" * 900)
    assert (w.attempts, len(w.last_error), w.next_attempt_at) == (
        1,
        500,
        NOW + timedelta(seconds=2),
    )


@pytest.mark.parametrize(
    ("user", "amount", "currency", "request_id", "field"),
    [
        ("", 100, "USD", "r", "user_id"),
        ("u", 100, "USD", "", "request_id"),
        ("u", 100, "USD", "r" * 201, "request_id"),
        ("u", 0, "USD", "r", "amount_minor"),
        ("u", -1, "USD", "r", "amount_minor"),
        ("u", 100, "XYZ", "r", "currency"),
        ("u", 100, "COIN", "r", "currency"),
        ("u", 100, "usd", "r", "currency"),
    ],
)
def test_bad_requests_name_the_field(
    user: str, amount: int, currency: str, request_id: str, field: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        validate_request(user, amount, currency, request_id)
    assert field in raised.value.fields


def test_an_account_follows_the_providers_word() -> None:
    account = PayoutAccount("u", "stripe", "acct_1", PayoutAccountState.ONBOARDING, "url", NOW, NOW)
    assert account.refresh(False, NOW) is False
    later = NOW + timedelta(minutes=5)
    assert account.refresh(True, later) is True
    assert (account.state, account.updated_at) == (PayoutAccountState.ACTIVE, later)


def test_a_withdrawal_is_stuck_past_the_grace_of_what_it_waits_for() -> None:
    """Our own steps get the short grace, a payout waiting for the bank the long one; a final
    withdrawal is never stuck, a returned payout not yet credited back is."""
    step, transit = timedelta(minutes=15), timedelta(days=7)
    w = withdrawal()
    assert (
        stuck_detail(w, NOW + timedelta(minutes=15), step_grace=step, transit_grace=transit) == ""
    )
    late = stuck_detail(w, NOW + timedelta(minutes=16), step_grace=step, transit_grace=transit)
    assert late == "requested for 960 s (7550 USD held)"
    w.held(NOW)
    w.sent("tr_1", "po_1", NOW)
    assert stuck_detail(w, NOW + timedelta(days=6), step_grace=step, transit_grace=transit) == ""
    assert stuck_detail(w, NOW + timedelta(days=8), step_grace=step, transit_grace=transit)
    w.provider_paid(NOW)  # known, the ledger not following: our step again
    assert stuck_detail(w, NOW + timedelta(hours=1), step_grace=step, transit_grace=transit)
    w.settled(NOW)
    assert stuck_detail(w, NOW + timedelta(days=30), step_grace=step, transit_grace=transit) == ""
    w.provider_returned("account_closed", "", NOW)
    owed = stuck_detail(w, NOW + timedelta(hours=1), step_grace=step, transit_grace=transit)
    assert owed == "paid/returned for 3600 s (7550 USD held and owed back)"
    w.settled(NOW)
    assert stuck_detail(w, NOW + timedelta(days=30), step_grace=step, transit_grace=transit) == ""
