"""Unit tests of the order of a branch's provider states: answers and settlement events arrive out
of order, and the saga records (and acts on) only a state further along than the one it has."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.domain.posting_saga import (
    PROVIDER_STATE_ORDER,
    PaymentMethod,
    Saga,
    SagaState,
    TryResult,
    TryState,
    provider_rank,
    provider_state_advances,
)

NOW = datetime(2026, 11, 30, tzinfo=UTC)
KNOWN = sorted(name for names in PROVIDER_STATE_ORDER for name in names)
# Every name a saga may hold or be told: none yet, every known one, one outside the order.
NAMES = ["", *KNOWN, "STATE_UNSPECIFIED"]
REFUNDS = frozenset({"PARTIALLY_REFUNDED", "REFUNDED"})


def _saga(provider_state: str = "") -> Saga:
    state, method = SagaState.CONFIRMING, PaymentMethod.CARD
    saga = Saga("saga_1", "co_1", "key", "fp", "co_1", state, method, NOW, NOW, NOW)
    saga.provider_state = provider_state
    return saga


def test_the_order_is_a_strict_ranking_over_all_pairs() -> None:
    for recorded, incoming in itertools.product(NAMES, repeat=2):
        forward = provider_state_advances(recorded, incoming)
        backward = provider_state_advances(incoming, recorded)
        assert not (forward and backward), (recorded, incoming)
        if recorded and incoming:
            # Level states (a wallet's name and payments' for the same step) change nothing.
            same = provider_rank(recorded) == provider_rank(incoming)
            assert same == (not forward and not backward), (recorded, incoming)
        if not incoming:
            assert not forward  # an answer naming no state says nothing
        elif not recorded:
            assert forward  # anything is news to a saga that recorded nothing
    for a, b, c in itertools.product(NAMES, repeat=3):
        if provider_state_advances(a, b) and provider_state_advances(b, c):
            assert provider_state_advances(a, c), (a, b, c)


def test_every_known_name_appears_once() -> None:
    names = [name for group in PROVIDER_STATE_ORDER for name in group]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("recorded", "incoming", "advances"),
    [
        # A capture is never undone by a stale authorization, failure or void.
        ("CAPTURED", "AUTHORIZED", False),
        ("CAPTURED", "FAILED", False),
        ("CAPTURED", "VOIDED", False),
        ("CAPTURED", "PROCESSING", False),
        ("CAPTURED", "CAPTURED", False),
        ("AUTHORIZED", "CAPTURED", True),
        # A real failure after the authorization is applied; a stale authorization after it not.
        ("AUTHORIZED", "FAILED", True),
        ("FAILED", "AUTHORIZED", False),
        ("AUTHORIZED", "VOIDED", True),
        ("VOIDED", "AUTHORIZED", False),
        # A failed checkout is still voided by the saga's Cancel; a voided one does not fail.
        ("FAILED", "VOIDED", True),
        ("VOIDED", "FAILED", False),
        # Money arriving after a failure or a void (a late bank transfer) is news: it is refunded.
        ("FAILED", "CAPTURED", True),
        ("VOIDED", "CAPTURED", True),
        ("PROCESSING", "CAPTURED", True),
        # Refunds end the branch.
        ("CAPTURED", "PARTIALLY_REFUNDED", True),
        ("PARTIALLY_REFUNDED", "REFUNDED", True),
        ("REFUNDED", "PARTIALLY_REFUNDED", False),
        ("REFUNDED", "CAPTURED", False),
        # Waiting states move forward only; UNKNOWN (the provider did not answer) tells nothing.
        ("REQUIRES_ACTION", "PROCESSING", True),
        ("PROCESSING", "REQUIRES_ACTION", False),
        ("AUTHORIZED", "UNKNOWN", False),
        ("", "UNKNOWN", True),
        ("UNKNOWN", "UNKNOWN", False),
        ("UNKNOWN", "REQUIRES_ACTION", True),
        # The wallet's hold names rank with payments' for the same step.
        ("PENDING", "CONFIRMED", True),
        ("CONFIRMED", "PENDING", False),
        ("CONFIRMED", "CANCELLED", False),
        ("PENDING", "EXPIRED", True),
        ("AUTHORIZED", "PENDING", False),
        # A name outside the order tells nothing.
        ("AUTHORIZED", "STATE_UNSPECIFIED", False),
        ("CAPTURED", "", False),
    ],
)
def test_conflicts_are_decided_for_the_money(recorded: str, incoming: str, advances: bool) -> None:
    assert provider_state_advances(recorded, incoming) is advances


def test_refunded_is_never_left_and_a_capture_only_goes_to_refunds() -> None:
    for incoming in NAMES:
        assert not provider_state_advances("REFUNDED", incoming)
        assert provider_state_advances("CAPTURED", incoming) == (incoming in REFUNDS)
        assert provider_state_advances("CONFIRMED", incoming) == (incoming in REFUNDS)


def test_the_saga_notes_only_progress_and_judges_answers_alike() -> None:
    for recorded, incoming in itertools.product(NAMES, repeat=2):
        saga = _saga(recorded)
        advances = provider_state_advances(recorded, incoming)
        result = TryResult(TryState.UNKNOWN, "pay_1", incoming)
        assert saga.is_stale(result) == (bool(incoming) and not advances)
        assert saga.note_provider_state(incoming) is advances
        assert saga.provider_state == (incoming if advances else recorded)


# Lifecycles a payment or hold really goes through, each ending at its furthest state.
LIFECYCLES = [
    ["REQUIRES_ACTION", "AUTHORIZED", "CAPTURED", "PARTIALLY_REFUNDED", "REFUNDED"],
    ["UNKNOWN", "PROCESSING", "CAPTURED"],
    ["PROCESSING", "FAILED"],
    ["REQUIRES_ACTION", "FAILED", "VOIDED"],
    ["AUTHORIZED", "FAILED"],
    ["AUTHORIZED", "VOIDED"],
    ["PROCESSING", "VOIDED", "CAPTURED", "REFUNDED"],
    ["PENDING", "CONFIRMED"],
    ["PENDING", "EXPIRED"],
]


@given(st.sampled_from(LIFECYCLES).flatmap(lambda states: st.permutations(states + states)))
def test_any_delivery_order_records_the_furthest_state(delivered: list[str]) -> None:
    """Whatever order (and however often) a lifecycle's states arrive in, the saga ends on the
    furthest one, having written each state at most once and never a step backwards."""
    saga = _saga()
    written: list[str] = []
    for name in delivered:
        if saga.note_provider_state(name):
            written.append(name)
    assert saga.provider_state == max(delivered, key=provider_rank)
    assert len(written) == len(set(written))
    ranks = [provider_rank(name) for name in written]
    assert ranks == sorted(ranks)
