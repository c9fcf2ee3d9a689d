"""The wall clock every service uses (standard library only, so domains may import it)."""

from datetime import UTC, datetime


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC (never naive)."""
    return datetime.now(UTC)
