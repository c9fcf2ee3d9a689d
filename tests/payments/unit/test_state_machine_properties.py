"""Property: whatever order (and however often) the provider's views of a payment arrive, the
payment never moves backwards, reports each settlement once, and never captures more than asked."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from hirepay_platform.tcc import TccBranch
from payments.domain.events import EventType
from payments.domain.model import _RANK, Method, Payment, PaymentState, PendingOp
from payments.domain.provider import ProviderErrorInfo, ProviderPayment, ProviderStatus

NOW = datetime(2026, 1, 1, tzinfo=UTC)

views = st.sampled_from(
    [
        ProviderPayment("pi_1", ProviderStatus.ACTION_REQUIRED, 1000, "USD", next_action_url="u"),
        ProviderPayment("pi_1", ProviderStatus.PROCESSING, 1000, "USD"),
        ProviderPayment("pi_1", ProviderStatus.AUTHORIZED, 1000, "USD", amount_capturable=1000),
        ProviderPayment("pi_1", ProviderStatus.CAPTURED, 1000, "USD", amount_received=1000),
        ProviderPayment("pi_1", ProviderStatus.CANCELED, 1000, "USD"),
        ProviderPayment(
            "pi_1",
            ProviderStatus.FAILED,
            1000,
            "USD",
            last_error=ProviderErrorInfo("card_declined", "generic_decline"),
        ),
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(views, min_size=1, max_size=12))
def test_views_in_any_order_never_move_a_payment_back(sequence: list[ProviderPayment]) -> None:
    p = Payment(
        id="pay_1",
        branch=TccBranch("g", "b"),
        owner_id="o",
        amount_minor=1000,
        currency="USD",
        method=Method.CARD,
        provider="stripe",
        state=PaymentState.UNKNOWN,
        created_at=NOW,
        updated_at=NOW,
        pending_op=PendingOp.AUTHORIZE,
    )
    seen: list[EventType] = []
    for view in sequence:
        before = p.state
        events = p.apply_intent(view, NOW)
        assert _RANK[p.state] >= _RANK[before]
        assert (events != []) <= (p.state is not before)
        seen += events
        assert p.captured_minor <= p.amount_minor
        if p.state is not PaymentState.UNKNOWN:
            assert p.pending_op is None
    # Final settlements are reported at most once each.
    for final in (EventType.PAYMENT_CAPTURED, EventType.PAYMENT_VOIDED):
        assert seen.count(final) <= 1
    assert not (EventType.PAYMENT_CAPTURED in seen and EventType.PAYMENT_VOIDED in seen)
