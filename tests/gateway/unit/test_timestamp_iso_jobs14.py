"""A timestamp in an HTTP answer is written as protobuf's ToDatetime(tzinfo=UTC) would have it
written, for every valid timestamp, and an invalid one is refused as protobuf refuses it, in 3
Python calls instead of 7 (four per job answered; issue 13)."""

from __future__ import annotations

import pstats
import random
from datetime import UTC

import pytest
from google.protobuf import timestamp_pb2

from gateway.api.convert import timestamp_to_iso
from tests.support.python_calls import profiled

_MIN, _MAX = -62135596800, 253402300799


def _as_before(ts: timestamp_pb2.Timestamp) -> str:
    return ts.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def _timestamps() -> list[timestamp_pb2.Timestamp]:
    rng = random.Random(14)
    pairs = [
        (1_764_658_800, 0),
        (1_764_658_800, 123_456_789),
        (0, 1),
        (0, 999),
        (0, 1_000),
        (1, 999_999_999),
        (-1, 0),
        (-1, 999_999_999),
        (_MIN, 0),
        (_MIN, 999_999_999),
        (_MAX, 0),
        (_MAX, 999_999_999),
        (951_782_400, 500_000_000),  # 2000-02-29
    ]
    pairs += [(rng.randint(_MIN, _MAX), rng.randrange(1_000_000_000)) for _ in range(2000)]
    pairs += [
        (rng.randint(0, 4_102_444_800), rng.randrange(0, 1_000_000_000, 1000)) for _ in range(500)
    ]
    return [timestamp_pb2.Timestamp(seconds=s, nanos=n) for s, n in pairs]


def test_every_valid_timestamp_is_written_as_protobuf_writes_it() -> None:
    for ts in _timestamps():
        assert timestamp_to_iso(ts) == _as_before(ts), (ts.seconds, ts.nanos)


@pytest.mark.parametrize(
    ("seconds", "nanos"), [(_MIN - 1, 0), (_MAX + 1, 0), (0, -1), (5, 1_000_000_000), (-5, -1)]
)
def test_an_invalid_timestamp_is_refused_as_protobuf_refuses_it(seconds: int, nanos: int) -> None:
    ts = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    with pytest.raises(ValueError) as ours:
        timestamp_to_iso(ts)
    with pytest.raises(ValueError) as theirs:
        _as_before(ts)
    assert str(ours.value) == str(theirs.value)


def test_unset_is_none() -> None:
    assert timestamp_to_iso(timestamp_pb2.Timestamp()) is None
    assert timestamp_to_iso(timestamp_pb2.Timestamp(seconds=5), present=False) is None


def test_a_timestamp_is_written_in_three_python_calls() -> None:
    ts = timestamp_pb2.Timestamp(seconds=1_764_658_800, nanos=123_456_789)
    with profiled() as profile:
        timestamp_to_iso(ts)
    # (the profiler's own disable() is one of its calls)
    calls = pstats.Stats(profile).total_calls - 1  # type: ignore[attr-defined]
    assert calls <= 3, calls
