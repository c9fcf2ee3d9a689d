"""The well-known protobuf types of every contract (hirepay_platform.wire)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from hirepay_platform.wire import timestamp, to_datetime


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=UTC),
        datetime(2026, 12, 1, 11, 30, 15, 999999, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 12, 1, 9, 30, 15, 1),  # naive: taken as UTC
        datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),  # before the epoch
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
def test_a_timestamp_is_what_the_protobuf_library_makes_of_the_datetime(value: datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(value)
    assert timestamp(value) == expected
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    assert to_datetime(timestamp(value)) == aware  # type: ignore[arg-type]


def test_no_datetime_is_no_timestamp() -> None:
    assert timestamp(None) is None
