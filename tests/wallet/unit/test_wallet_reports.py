"""The readers' pure rules (ESC-11): report ranges and their period counts, totals per unit, the
scope a page token is bound to, and who may read what (SEC-2, wallet.service_layer.access)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hirepay_platform.errors import PermissionDenied, ValidationError
from hirepay_platform.identity import Actor, Caller
from wallet.domain import commands
from wallet.domain.model import AccountKind
from wallet.domain.reports import (
    MAX_PERIODS,
    EarningsBucket,
    EntryFilter,
    Period,
    periods_between,
    totals_of,
    validate_range,
)
from wallet.service_layer import access


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_periods_count_every_started_day_or_month() -> None:
    assert periods_between(at("2026-11-01"), at("2026-11-02"), Period.DAY) == 2
    assert periods_between(at("2026-11-01T10:00"), at("2026-11-01T11:00"), Period.DAY) == 1
    assert periods_between(at("2026-11-30"), at("2027-01-01"), Period.MONTH) == 3
    assert periods_between(at("2026-12-31"), at("2027-01-01"), Period.MONTH) == 2


def test_report_ranges_are_required_ordered_and_bounded() -> None:
    validate_range(at("2026-01-01"), at("2027-02-04"), Period.DAY)  # 400 days
    for since, until, period in (
        (None, at("2026-01-01"), Period.DAY),
        (at("2026-01-01"), None, Period.DAY),
        (at("2026-01-02"), at("2026-01-01"), Period.DAY),
        (at("2026-01-01"), at("2026-01-01"), Period.MONTH),
        (at("2026-01-01"), at("2027-02-05"), Period.DAY),
    ):
        with pytest.raises(ValidationError):
            validate_range(since, until, period)
    months = at("2026-01-01").replace(year=2026 + MAX_PERIODS // 12)
    validate_range(at("2026-01-01"), months, Period.MONTH)


def test_totals_per_unit_sum_the_periods() -> None:
    since = at("2026-03-01")
    buckets = [
        EarningsBucket(at("2026-03-01"), "USD", 1_500, 0),
        EarningsBucket(at("2026-03-01"), "COIN", 50, 0),
        EarningsBucket(at("2026-04-01"), "USD", 700, 200),
        EarningsBucket(at("2026-04-01"), "COIN", 0, 20),
    ]
    assert totals_of(buckets, since) == [
        EarningsBucket(since, "COIN", 50, 20),
        EarningsBucket(since, "USD", 2_200, 200),
    ]
    assert [t.net for t in totals_of(buckets, since)] == [30, 2_000]


def test_a_page_token_scope_names_every_filter() -> None:
    base = EntryFilter(owner_id="u-1", kind=AccountKind.USER)
    others = [
        EntryFilter(owner_id="u-2", kind=AccountKind.USER),
        EntryFilter(owner_id="u-1", kind=AccountKind.USER, unit="USD"),
        EntryFilter(owner_id="u-1", kind=AccountKind.ESCROW),
        EntryFilter(owner_id="u-1", kind=AccountKind.USER, since=at("2026-01-01")),
        EntryFilter(owner_id="u-1", kind=AccountKind.USER, until=at("2026-01-01")),
    ]
    assert len({base.scope(), *(f.scope() for f in others)}) == 1 + len(others)


async def test_a_stranger_through_the_gateway_reads_an_empty_wallet_without_a_query() -> None:
    class NoDatabase:
        def uow(self):  # a read for a stranger must not reach the database at all
            raise AssertionError("queried")

    deps = NoDatabase()
    stranger = Caller("gateway", Actor("u-2", "customer"))
    summary = commands.GetWalletSummary("u-1")
    assert await access.wallet_summary(stranger, summary, deps) == []  # type: ignore[arg-type]
    page = await access.wallet_transactions(
        stranger,
        commands.ListWalletTransactions("u-1"),
        deps,  # type: ignore[arg-type]
    )
    assert (page.items, page.next_page_token) == ([], "")
    anonymous = Caller("gateway", None)
    assert await access.wallet_summary(anonymous, summary, deps) == []  # type: ignore[arg-type]


def test_admin_reports_for_admins_and_internal_callers() -> None:
    access.check_admin(Caller("gateway", Actor("root", "admin")))
    access.check_admin(Caller("payments"))
    access.check_admin(Caller("jobs"))
    for caller in (
        Caller("gateway", Actor("u-1", "customer")),
        Caller("gateway", Actor("u-1", "contractor")),
        Caller("gateway", None),
    ):
        with pytest.raises(PermissionDenied):
            access.check_admin(caller)
