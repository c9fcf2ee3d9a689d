"""The postings a process completed moments ago, by which its settlement consumer judges their
events without reading them again (issue 13)."""

from __future__ import annotations

import pytest

from jobs.domain.posting_saga import (
    SettlementEvent,
    TryResult,
    TryState,
    settlement_nothing_left_after_completion,
)
from jobs.service_layer.posting.finished import CompletedPostings


def _event(state: TryState, payment_id: str = "pay_1", saga_id: str = "saga_1") -> SettlementEvent:
    return SettlementEvent("ev1", 1, "payment.x", saga_id, "payment", TryResult(state, payment_id))


@pytest.mark.parametrize(
    ("state", "payment_id", "nothing_left"),
    [
        (TryState.RESERVED, "pay_1", True),  # its authorization
        (TryState.CAPTURED, "pay_1", True),  # its capture
        (TryState.CAPTURED, "", True),
        (TryState.CAPTURED, "pay_2", False),  # another payment: judged on a read
        (TryState.REFUNDED, "pay_1", False),  # a refund may be what a REFUNDING saga waits for
        (TryState.FAILED, "pay_1", False),
        (TryState.CANCELLED, "pay_1", False),
        (TryState.PROCESSING, "pay_1", False),
    ],
)
def test_only_its_own_authorization_or_capture_asks_nothing_of_a_completed_posting(
    state: TryState, payment_id: str, nothing_left: bool
) -> None:
    assert settlement_nothing_left_after_completion("pay_1", _event(state, payment_id)) is (
        nothing_left
    )


def test_a_posting_is_known_completed_for_a_while_only() -> None:
    now = [100.0]
    completed = CompletedPostings(remember_seconds=60.0, clock=lambda: now[0])
    assert not completed.nothing_left(_event(TryState.CAPTURED))  # not completed here
    completed.completed("saga_1", "pay_1")
    assert completed.nothing_left(_event(TryState.CAPTURED))
    assert not completed.nothing_left(_event(TryState.CAPTURED, saga_id="saga_2"))
    assert not completed.nothing_left(_event(TryState.REFUNDED))
    now[0] = 159.0
    assert completed.nothing_left(_event(TryState.RESERVED))
    now[0] = 160.0
    assert not completed.nothing_left(_event(TryState.CAPTURED))  # forgotten: judged on a read


def test_it_keeps_at_most_so_many_postings() -> None:
    completed = CompletedPostings(max_entries=2, clock=lambda: 0.0)
    for i in range(5):
        completed.completed(f"saga_{i}", "pay_1")
    assert completed.nothing_left(_event(TryState.CAPTURED, saga_id="saga_4"))
    assert (
        sum(
            completed.nothing_left(_event(TryState.CAPTURED, saga_id=f"saga_{i}")) for i in range(5)
        )
        <= 2
    )
