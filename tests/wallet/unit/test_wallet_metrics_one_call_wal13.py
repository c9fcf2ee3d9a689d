"""The wallet's business metrics count through the platform's one-call counting (issue 13): a
ConfirmHold or ReserveHold answered counts its transfer and its hold's transition, and a grouped
batch its size, without prometheus_client's public `inc`/`observe` (their observability checks,
four Python calls per count) or the hold state's enum `value` property (two), and each counts exactly what those would have (OPS-1: the
wallet's transfers by outcome, hold transitions, batch sizes)."""

from __future__ import annotations

import cProfile
import pstats
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from hirepay_platform.tcc import TccBranch
from tests.support.python_calls import profiled
from wallet.domain.holds import Hold, HoldState
from wallet.entrypoints.servicer import _count_hold_transition, _counted
from wallet.service_layer.handlers import HoldResult
from wallet.service_layer.metrics import batch_size_observer

_NOW = datetime(2026, 12, 2, tzinfo=UTC)


def _hold(state: HoldState) -> Hold:
    return Hold(
        branch=TccBranch("metrics-wal13", "payment"),
        account_id="a",
        destination_account_id="b",
        unit="USD",
        amount=100,
        expires_at=_NOW + timedelta(minutes=5),
        created_at=_NOW,
        description="",
        state=state,
    )


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _prometheus_calls(profile: cProfile.Profile) -> list[str]:
    """The prometheus_client functions the profiled code called (its value updates aside)."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    return sorted(
        name
        for (path, _, name) in stats
        if "prometheus_client" in path and not path.endswith("values.py")
    )


async def test_a_confirm_counts_its_transfer_and_transition_once_without_the_public_inc():
    confirmed = HoldResult(_hold(HoldState.CONFIRMED))
    posted = ("hirepay_wallet_transfers_total", {"operation": "ConfirmHold", "outcome": "posted"})
    moved = (
        "hirepay_wallet_hold_transitions_total",
        {"from_state": "pending", "to_state": "confirmed"},
    )

    async def done() -> HoldResult:
        return confirmed

    await _counted("ConfirmHold", done())  # the label sets' series made once
    _count_hold_transition(confirmed, "pending")
    before = _value(posted[0], **posted[1]), _value(moved[0], **moved[1])
    with profiled() as profile:
        await _counted("ConfirmHold", done())
        _count_hold_transition(confirmed, "pending")
    assert (_value(posted[0], **posted[1]), _value(moved[0], **moved[1])) == (
        before[0] + 1,
        before[1] + 1,
    )
    assert _prometheus_calls(profile) == []  # Counter.inc and its checks: none
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    assert not [name for (path, _, name) in stats if path.endswith("enum.py")]  # state labels


def test_each_transition_is_counted_under_its_states_values():
    for result, from_state, to_state in (
        (HoldResult(_hold(HoldState.PENDING)), "none", "pending"),
        (HoldResult(_hold(HoldState.CANCELLED)), "pending", "cancelled"),
        (HoldResult(None, null_compensation=True), "none", "cancelled"),
    ):
        labels = {"from_state": from_state, "to_state": to_state}
        before = _value("hirepay_wallet_hold_transitions_total", **labels)
        _count_hold_transition(result, from_state)
        assert _value("hirepay_wallet_hold_transitions_total", **labels) == before + 1
    expired = {"from_state": "pending", "to_state": "expired"}
    before = _value("hirepay_wallet_hold_transitions_total", **expired)
    _count_hold_transition(HoldResult(_hold(HoldState.EXPIRED)), "pending")  # the worker's count
    assert _value("hirepay_wallet_hold_transitions_total", **expired) == before


def test_a_replayed_reserve_counts_no_transition():
    reserved = HoldResult(_hold(HoldState.PENDING), replayed=True)
    labels = {"from_state": "none", "to_state": "pending"}
    before = _value("hirepay_wallet_hold_transitions_total", **labels)
    _count_hold_transition(reserved, "none")
    assert _value("hirepay_wallet_hold_transitions_total", **labels) == before


def test_a_batch_size_is_observed_as_histogram_observe_would_without_it():
    observe = batch_size_observer("TestWal13")
    name = "hirepay_wallet_grouped_calls_per_batch"
    labels = {"operation": "TestWal13"}
    with profiled() as profile:
        for size in (1, 3, 3, 64, 200):
            observe(size)
    assert _value(f"{name}_count", **labels) == 5
    assert _value(f"{name}_sum", **labels) == 271
    buckets = {
        le: _value(f"{name}_bucket", **labels, le=le)
        for le in ("1.0", "2.0", "4.0", "64.0", "128.0", "+Inf")
    }
    assert buckets == {"1.0": 1, "2.0": 1, "4.0": 3, "64.0": 4, "128.0": 4, "+Inf": 5}
    assert _prometheus_calls(profile) == []  # Histogram.observe and its checks: none
