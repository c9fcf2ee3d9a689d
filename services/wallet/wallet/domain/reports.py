"""What readers of the ledger see (ESC-11): a user's history lines, the filters of the listings,
and commission earnings grouped by period (plain Python: the SQL lives in the adapters)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hirepay_platform import money
from wallet.domain.errors import invalid
from wallet.domain.model import AccountKind, validate_owner_id

# A report may group at most this many periods (a day report of 400 days, a month report of 33
# years): bounds the answer's size whatever range is asked for.
MAX_PERIODS = 400


class Period(enum.StrEnum):
    """The length of a reporting period, in UTC (the value is PostgreSQL's date_trunc field)."""

    DAY = "day"
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class LedgerLine:
    """One entry as a reader sees it: the amount on one account and what it was for."""

    entry_id: int
    transfer_id: str
    account_id: str
    owner_id: str
    account_kind: AccountKind
    unit: str
    amount: int  # signed: positive credits the account
    counterparty_kind: AccountKind | None
    description: str
    metadata: dict[str, str]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class EntryFilter:
    """Which entries a listing shows; every field optional (None: no restriction)."""

    owner_id: str | None = None
    unit: str | None = None
    kind: AccountKind | None = None
    since: datetime | None = None
    until: datetime | None = None

    def scope(self) -> str:
        """Names the listing a page token belongs to: a token is valid only for the same filters."""
        parts = (
            self.owner_id or "",
            self.unit or "",
            self.kind.value if self.kind else "",
            self.since.isoformat() if self.since else "",
            self.until.isoformat() if self.until else "",
        )
        return "entries:" + "|".join(parts)


@dataclass(frozen=True, slots=True)
class AccountFilter:
    """Which accounts a balance listing shows; every field optional."""

    kind: AccountKind | None = None
    unit: str | None = None
    owner_id: str | None = None

    def scope(self) -> str:
        kind = self.kind.value if self.kind else ""
        return f"balances:{kind}|{self.unit or ''}|{self.owner_id or ''}"


@dataclass(frozen=True, slots=True)
class EarningsBucket:
    """What platform revenue earned in one period (or a whole range) in one unit."""

    period_start: datetime
    unit: str
    credited: int
    debited: int  # a positive number: what left revenue (refunded fees)

    @property
    def net(self) -> int:
        return self.credited - self.debited


@dataclass(frozen=True, slots=True)
class Earnings:
    """Buckets per period and unit, oldest first, and the range's totals per unit."""

    buckets: list[EarningsBucket] = field(default_factory=list)
    totals: list[EarningsBucket] = field(default_factory=list)


def totals_of(buckets: list[EarningsBucket], since: datetime) -> list[EarningsBucket]:
    """The range's sums per unit (alphabetical), from the period buckets."""
    sums: dict[str, tuple[int, int]] = {}
    for b in buckets:
        credited, debited = sums.get(b.unit, (0, 0))
        sums[b.unit] = (credited + b.credited, debited + b.debited)
    return [EarningsBucket(since, unit, c, d) for unit, (c, d) in sorted(sums.items())]


def periods_between(since: datetime, until: datetime, period: Period) -> int:
    """How many periods (started ones included) the range [since, until) touches."""
    if period is Period.DAY:
        return (until.date() - since.date()).days + 1
    return (until.year - since.year) * 12 + until.month - since.month + 1


def validate_range(since: datetime | None, until: datetime | None, period: Period) -> None:
    """A report's range: both ends given, ordered, and not more than MAX_PERIODS periods."""
    if since is None:
        raise invalid("since", "is required")
    if until is None:
        raise invalid("until", "is required")
    if until <= since:
        raise invalid("until", "must be after since")
    if periods_between(since.astimezone(UTC), until.astimezone(UTC), period) > MAX_PERIODS:
        raise invalid("until", f"the range may span at most {MAX_PERIODS} periods")


def validate_window(since: datetime | None, until: datetime | None) -> None:
    """An optional time window of a listing: when both ends are given, ordered."""
    if since is not None and until is not None and until <= since:
        raise invalid("until", "must be after since")


def optional_unit(unit: str) -> str | None:
    """A unit filter: empty means every unit; otherwise a valid unit."""
    return money.validate_unit(unit, field="unit") if unit else None


def optional_owner(owner_id: str, field: str = "owner_id") -> str | None:
    """An owner filter: empty means every owner."""
    return validate_owner_id(owner_id, field) if owner_id else None
