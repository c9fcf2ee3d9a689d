"""The settlement stream's horizon ages (payments 0020, OPS-1): the oldest start among the running
transactions holding an xid, those whose start is hidden from the role aged from when they were
first seen and forgotten once ended, and the oldest held event's age; never negative."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from payments.service_layer.handlers.horizon import HorizonWatch
from payments.service_layer.ports import HorizonSample

T0 = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_nothing_running_and_nothing_held_is_zero() -> None:
    ages = HorizonWatch().ages(HorizonSample(T0, None, frozenset(), None))
    assert (ages.horizon_seconds, ages.held_seconds) == (0.0, 0.0)


def test_a_readable_start_and_a_held_event_give_their_ages() -> None:
    ages = HorizonWatch().ages(HorizonSample(_at(90), _at(20), frozenset(), _at(30)))
    assert (ages.horizon_seconds, ages.held_seconds) == (70.0, 60.0)


def test_an_unreadable_start_is_aged_from_first_sight_and_forgotten_once_ended() -> None:
    watch = HorizonWatch()
    hidden = frozenset({(4242, 1000)})
    assert watch.ages(HorizonSample(_at(10), None, hidden, None)).horizon_seconds == 0.0
    assert watch.ages(HorizonSample(_at(25), _at(20), hidden, None)).horizon_seconds == 15.0
    # Ended: another transaction of the same backend is a new one, aged afresh.
    assert watch.ages(HorizonSample(_at(30), None, frozenset(), None)).horizon_seconds == 0.0
    assert watch.first_seen == {}
    again = frozenset({(4242, 1007)})
    assert watch.ages(HorizonSample(_at(40), None, again, None)).horizon_seconds == 0.0
    assert watch.ages(HorizonSample(_at(45), None, again, None)).horizon_seconds == 5.0


def test_an_event_time_ahead_of_the_servers_clock_is_no_negative_age() -> None:
    # An event's time is its writer's clock, which may run a little ahead of the server's.
    ages = HorizonWatch().ages(HorizonSample(_at(10), None, frozenset(), _at(10.2)))
    assert ages.held_seconds == 0.0
