"""Conversions between Python values and the well-known protobuf types used by every contract."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(value: datetime | None) -> Timestamp | None:
    """A protobuf Timestamp for an aware datetime; None stays unset."""
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def to_datetime(stamp: Timestamp) -> datetime:
    """The aware (UTC) datetime of a protobuf Timestamp."""
    return stamp.ToDatetime(tzinfo=UTC)
