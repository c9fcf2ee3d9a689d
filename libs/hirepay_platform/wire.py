"""Conversions between Python values and the well-known protobuf types used by every contract."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(value: datetime | None) -> Timestamp | None:
    """A protobuf Timestamp for an aware datetime (a naive one is taken as UTC, as
    Timestamp.FromDatetime takes it); None stays unset.

    Built from the datetime's distance to the epoch in one constructor call: FromDatetime
    (utctimetuple, calendar.timegm, a range check and two field writes) cost about twice as
    much, and a payments answer carries two timestamps (issue 13)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    since = value - _EPOCH
    return Timestamp(seconds=since.days * 86400 + since.seconds, nanos=since.microseconds * 1000)


def to_datetime(stamp: Timestamp) -> datetime:
    """The aware (UTC) datetime of a protobuf Timestamp."""
    return stamp.ToDatetime(tzinfo=UTC)
