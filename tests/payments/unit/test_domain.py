"""The domain's state machines and rules, in plain Python."""

from __future__ import annotations

import dataclasses
import enum
from datetime import UTC, date, datetime, timedelta

import pytest

from hirepay_platform.tcc import TccBranch
from payments.domain import errors
from payments.domain.events import EventType
from payments.domain.model import Method, Payment, PaymentState, PendingOp, decline_reason
from payments.domain.plans import DEFAULT_PLANS, find_plan, parse_plans
from payments.domain.provider import (
    CheckoutState,
    ProviderCheckout,
    ProviderErrorInfo,
    ProviderPayment,
    ProviderStatus,
)
from payments.domain.transactions import Transaction, TxnStatus, UserType

NOW = datetime(2026, 1, 10, 10, 25, tzinfo=UTC)


def payment(state: PaymentState = PaymentState.UNKNOWN, **kw) -> Payment:
    return Payment(
        id="pay_1",
        branch=TccBranch("g", "payment"),
        owner_id="o",
        amount_minor=3000,
        currency="USD",
        method=Method.CARD,
        provider="stripe",
        state=state,
        created_at=NOW,
        updated_at=NOW,
        **kw,
    )


def intent(status: ProviderStatus, **kw) -> ProviderPayment:
    return ProviderPayment("pi_1", status, 3000, "USD", **kw)


def test_a_snapshot_is_equal_and_shares_nothing_changed_in_place() -> None:
    """What the repository keeps of a payment as stored (issue 13: no deep copy per write)."""
    p = payment(pending_op=PendingOp.AUTHORIZE, metadata={"subsystem": "jobs"})
    twin = p.snapshot()
    assert twin == p and twin is not p
    twin.metadata["subsystem"] = "elsewhere"
    twin.apply_intent(intent(ProviderStatus.AUTHORIZED), NOW)
    assert p.metadata == {"subsystem": "jobs"} and p.state is PaymentState.UNKNOWN


def test_a_snapshot_copies_every_field() -> None:
    """Whatever fields a payment has (a field added later included), its snapshot and the
    probe of tells_nothing_new carry each one as it is."""
    p = payment(pending_op=PendingOp.AUTHORIZE, metadata={"subsystem": "jobs"})
    changes: dict[str, object] = {}
    for f in dataclasses.fields(Payment):
        value = getattr(p, f.name)
        if isinstance(value, bool):
            changes[f.name] = not value
        elif isinstance(value, int):
            changes[f.name] = value + 7
        elif isinstance(value, str) and not isinstance(value, enum.Enum):
            changes[f.name] = f"{value}-{f.name}"
    changes["next_poll_at"] = NOW + timedelta(seconds=5)
    full = dataclasses.replace(p, **changes)
    twin = full.snapshot()
    for f in dataclasses.fields(Payment):
        assert getattr(twin, f.name) == getattr(full, f.name), f.name
    assert twin.metadata is not full.metadata


def test_authorization_then_capture_emit_events_once() -> None:
    p = payment(pending_op=PendingOp.AUTHORIZE)
    assert p.apply_intent(intent(ProviderStatus.AUTHORIZED), NOW) == [EventType.PAYMENT_AUTHORIZED]
    assert p.pending_op is None and p.state is PaymentState.AUTHORIZED
    assert p.apply_intent(intent(ProviderStatus.AUTHORIZED), NOW) == []
    p.request_capture(2000, NOW)
    events = p.apply_intent(intent(ProviderStatus.CAPTURED, amount_received=2000), NOW)
    assert events == [EventType.PAYMENT_CAPTURED] and p.captured_minor == 2000


def test_a_stale_view_never_moves_a_payment_back() -> None:
    p = payment(PaymentState.CAPTURED, captured_minor=3000)
    assert p.apply_intent(intent(ProviderStatus.AUTHORIZED), NOW) == []
    assert p.state is PaymentState.CAPTURED
    v = payment(PaymentState.VOIDED)
    v.apply_intent(intent(ProviderStatus.FAILED, last_error=ProviderErrorInfo("x")), NOW)
    assert v.state is PaymentState.VOIDED


def test_a_failed_checkout_payment_may_still_succeed() -> None:
    p = payment(PaymentState.FAILED, failure_reason="PAYMENT_DECLINED")
    assert p.apply_intent(intent(ProviderStatus.AUTHORIZED), NOW) == [EventType.PAYMENT_AUTHORIZED]
    assert p.failure_reason == ""


def test_void_rules() -> None:
    p = payment(PaymentState.AUTHORIZED)
    assert p.request_void("r", NOW) and p.pending_op is PendingOp.VOID
    with pytest.raises(errors.PaymentVoided):
        p.request_capture(0, NOW)
    captured = payment(PaymentState.CAPTURED)
    with pytest.raises(errors.PaymentNotVoidable):
        captured.request_void("r", NOW)
    failed = payment(PaymentState.FAILED)
    assert not failed.request_void("r", NOW)


def test_capture_cannot_exceed_the_authorization() -> None:
    p = payment(PaymentState.AUTHORIZED)
    with pytest.raises(errors.PaymentNotCapturable):
        p.request_capture(3001, NOW)
    p.request_capture(0, NOW)
    assert p.capture_amount_minor == 3000


def test_refund_reservations() -> None:
    p = payment(PaymentState.CAPTURED, captured_minor=1000)
    assert p.reserve_refund(400, NOW) == 400
    assert p.reserve_refund(0, NOW) == 600 and p.refundable_minor == 0
    with pytest.raises(errors.RefundExceedsCaptured):
        p.reserve_refund(1, NOW)
    p.release_refund(600, NOW)
    assert p.refundable_minor == 600
    assert p.settle_refund(400, NOW) == [EventType.PAYMENT_REFUNDED]
    assert p.state is PaymentState.PARTIALLY_REFUNDED
    with pytest.raises(errors.PaymentNotRefundable):
        payment(PaymentState.AUTHORIZED).reserve_refund(1, NOW)


def test_unknown_and_backoff() -> None:
    p = payment(pending_op=PendingOp.AUTHORIZE)
    p.mark_unknown(timeout=True, message="slow", now=NOW)
    assert p.failure_reason == "PAYMENT_TIMEOUT" and p.needs_provider_work()
    delays = []
    for _ in range(5):
        p.schedule_poll(NOW, 1.0, 8.0)
        delays.append((p.next_poll_at - NOW).total_seconds())
    assert delays == [1, 2, 4, 8, 8]


def test_decline_reasons() -> None:
    assert (
        decline_reason(ProviderErrorInfo("card_declined", "insufficient_funds"))
        == "INSUFFICIENT_FUNDS"
    )
    assert (
        decline_reason(ProviderErrorInfo("card_declined", "generic_decline")) == "PAYMENT_DECLINED"
    )
    assert decline_reason(ProviderErrorInfo("expired_card", "expired_card")) == "PAYMENT_DECLINED"


def txn(status: TxnStatus = TxnStatus.PENDING) -> Transaction:
    return Transaction(
        id="txn_1", status=status, user_type=UserType.COMPANY, user_id="u", email="a@b.c",
        amount_minor=3000, currency="USD", payment_method="STRIPE", provider="stripe",
        plan="MONTHLY", period_days=30, request_id="r", return_url="https://x", cancel_url="https://y",
        created_at=NOW, updated_at=NOW,
    )  # fmt: skip


def session(status: CheckoutState, paid: bool = False) -> ProviderCheckout:
    return ProviderCheckout("cs_1", status, paid, "", None, "pi_1")


def test_transaction_success_sets_the_period_and_expires_at_its_end() -> None:
    t = txn()
    events = t.apply_checkout(
        session(CheckoutState.COMPLETE, paid=True), None, NOW.date(), None, NOW
    )
    assert events == [EventType.TRANSACTION_SUCCEEDED]
    assert (t.subscription_start, t.subscription_end) == (date(2026, 1, 10), date(2026, 2, 9))
    assert t.is_active(date(2026, 2, 8)) and not t.is_active(date(2026, 2, 9))
    # A purchase racing an active subscription starts when the current one ends.
    second = txn()
    second.apply_checkout(
        session(CheckoutState.COMPLETE, paid=True), None, NOW.date(), t.subscription_end, NOW
    )
    assert second.subscription_start == date(2026, 2, 9)


def test_transaction_failure_cancel_and_late_success() -> None:
    t = txn()
    failed = intent(
        ProviderStatus.FAILED,
        last_error=ProviderErrorInfo("card_declined", "generic_decline", "declined"),
    )
    assert t.apply_checkout(session(CheckoutState.OPEN), failed, NOW.date(), None, NOW) == [
        EventType.TRANSACTION_FAILED
    ]
    assert t.subscription_end is None
    assert t.apply_checkout(session(CheckoutState.COMPLETE, paid=True), None, NOW.date(), None, NOW)
    assert t.status is TxnStatus.SUCCESS
    c = txn()
    assert c.apply_checkout(session(CheckoutState.EXPIRED), None, NOW.date(), None, NOW) == [
        EventType.TRANSACTION_CANCELLED
    ]
    assert c.cancel(NOW) == []


def test_plans() -> None:
    company = find_plan(DEFAULT_PLANS, "monthly", UserType.COMPANY)
    assert company.price("") == (3000, "USD") and company.price("EUR") == (2800, "EUR")
    with pytest.raises(errors.PlanNotFound):
        company.price("JPY")
    plans = parse_plans(
        '[{"code": "YEARLY", "user_type": "applicant", "prices": {"JPY": 12000}, "period_days": 365}]'
    )
    assert plans[0].price("") == (12000, "JPY")
    for bad in (
        "[]",
        "{}",
        '[{"code": "X"}]',
        '[{"code":"X","user_type":"COMPANY","prices":{"XXX":1},"period_days":1}]',
    ):
        with pytest.raises((ValueError, errors.ValidationError)):
            parse_plans(bad)


def test_an_expired_checkout_cancels_pending_but_keeps_a_decline() -> None:
    declined = txn(TxnStatus.FAILED)
    assert (
        declined.apply_checkout(session(CheckoutState.EXPIRED), None, NOW.date(), None, NOW) == []
    )
    assert declined.status is TxnStatus.FAILED
    assert declined.cancel(NOW) == [EventType.TRANSACTION_CANCELLED]  # the user gave up explicitly


@pytest.mark.parametrize("state", [PaymentState.PROCESSING, PaymentState.REQUIRES_ACTION])
def test_a_payment_waiting_for_the_provider_is_watched_with_bounded_backoff(state) -> None:
    """Issue 11 §2: nothing but the provider moves these on, and its webhook may be lost."""
    p = payment(state)
    delays = []
    for _ in range(8):
        p.finish_step(NOW, watch_base=5, watch_max=60)
        assert p.next_poll_at is not None
        delays.append((p.next_poll_at - NOW).total_seconds())
    assert delays[:4] == [5, 10, 20, 40] and set(delays[4:]) == {60}


@pytest.mark.parametrize(
    "state", [PaymentState.AUTHORIZED, PaymentState.CAPTURED, PaymentState.FAILED]
)
def test_a_payment_not_waiting_for_the_provider_is_not_polled(state) -> None:
    p = payment(state, next_poll_at=NOW, poll_attempts=3)
    p.finish_step(NOW, watch_base=5, watch_max=60)
    assert p.next_poll_at is None and p.poll_attempts == 0


def test_a_payment_the_provider_does_not_know_is_final() -> None:
    authorized = payment(PaymentState.AUTHORIZED)
    assert authorized.vanish(NOW) == [EventType.PAYMENT_VOIDED]
    assert authorized.state is PaymentState.VOIDED
    processing = payment(PaymentState.PROCESSING)
    assert processing.vanish(NOW) == [EventType.PAYMENT_FAILED]
    assert processing.state is PaymentState.FAILED and processing.failure_reason
    captured = payment(PaymentState.CAPTURED)
    assert captured.vanish(NOW) == [] and captured.state is PaymentState.CAPTURED


def test_re_reading_an_unchanged_payment_does_not_make_it_recently_changed() -> None:
    """The watch poller re-reads waiting payments; only a change moves `updated_at`."""
    p = payment(PaymentState.PROCESSING, provider_payment_id="pi_1")
    later = datetime(2026, 1, 10, 11, 0, tzinfo=UTC)
    assert p.apply_intent(intent(ProviderStatus.PROCESSING), later) == []
    assert p.updated_at == NOW
    p.apply_intent(intent(ProviderStatus.CAPTURED, amount_received=3000), later)
    assert p.state is PaymentState.CAPTURED and p.updated_at == later


def test_an_abandoned_provider_payment_is_cancelled_only_while_still_open() -> None:
    open_one = ProviderPayment(
        "p1", ProviderStatus.ACTION_REQUIRED, 500, "USD", metadata={"a": "b"}
    )
    gone = open_one.abandoned(ProviderStatus.ACTION_REQUIRED, ProviderStatus.FAILED)
    assert (gone.status, gone.amount_received, gone.metadata) == (
        ProviderStatus.CANCELED,
        0,
        {"a": "b"},
    )
    taken = ProviderPayment("p2", ProviderStatus.CAPTURED, 500, "USD", amount_received=500)
    assert taken.abandoned(ProviderStatus.ACTION_REQUIRED) is taken  # a refund, never a cancel


def test_telling_nothing_new_is_asked_of_a_copy_and_changes_nothing() -> None:
    """A webhook's view is tried on a copy of the payment: whatever the answer, the payment
    itself is left as it was (the check may not take the view by accident)."""
    p = payment(PaymentState.AUTHORIZED, provider_payment_id="pi_1", metadata={"job_id": "j"})
    before = dataclasses.replace(p, metadata=dict(p.metadata))
    assert p.tells_nothing_new(intent(ProviderStatus.AUTHORIZED))
    assert not p.tells_nothing_new(intent(ProviderStatus.CAPTURED, amount_received=3000))
    assert not p.tells_nothing_new(intent(ProviderStatus.CANCELED))
    assert p == before and p.metadata == {"job_id": "j"}
    unknown = payment(provider_payment_id="pi_1")
    assert not unknown.tells_nothing_new(intent(ProviderStatus.AUTHORIZED))  # needs work
    assert unknown.state is PaymentState.UNKNOWN
