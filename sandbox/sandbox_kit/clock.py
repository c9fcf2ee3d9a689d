"""The sandbox clock: real time plus whatever the admin API advanced it by."""

from __future__ import annotations

import time
from datetime import UTC, datetime


class Clock:
    """Unix time with an adjustable offset, so tests need not wait for expiries."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def now(self) -> int:
        """Unix seconds."""
        return int(self.time())

    def iso(self, at: float | None = None) -> str:
        """RFC 3339 in UTC with a `Z`, as PayPal and most JSON APIs write times."""
        moment = datetime.fromtimestamp(self.time() if at is None else at, tz=UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def reset(self) -> None:
        self.offset = 0.0
